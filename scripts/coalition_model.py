"""Rule coalition_model: the model of one coalition of contributors, made one way, with its cost."""

import json
from dataclasses import asdict

import pandas as pd

from diffattr.contributors import members
from diffattr.data import read_imageset
from diffattr.models import PixelDiffusion, build_scheduler, build_unet, resolve_device
from diffattr.runtime import job
from diffattr.store import atomic_path, read_npz
from diffattr.unlearning import coalition_model
from diffattr.valuation import coalition_mask

with job(snakemake.log[0], snakemake.threads) as log:
    p, wc = snakemake.params, snakemake.wildcards
    device = resolve_device(p.device)
    data = read_imageset(snakemake.input.train)
    values = (
        pd.read_csv(snakemake.input.values)["value"].to_numpy()
        if "values" in snakemake.input.keys()
        else None
    )
    coalition = coalition_mask(wc.coalition, read_npz(snakemake.input.coalitions), values, p.fraction)
    images = data.tensor()
    seed = int(wc.seed)
    fresh = PixelDiffusion(
        build_unet(p.model, images.shape[-1], images.shape[1], seed=seed), build_scheduler(p.scheduler)
    )
    base = PixelDiffusion.from_pretrained(snakemake.input.base) if "base" in snakemake.input.keys() else None
    kept = members(data.contributors, coalition)
    log.info(
        "%s %s: %d of %d contributors, %d images",
        wc.how,
        wc.coalition,
        coalition.sum(),
        len(coalition),
        kept.sum(),
    )
    model, record = coalition_model(wc.how, kept, images, fresh, base, p.train, seed, device)
    with atomic_path(snakemake.output[0]) as tmp:
        model.to("cpu").save_pretrained(tmp)
        (tmp / "coalition.json").write_text(
            json.dumps({**asdict(record), "coalition": coalition.tolist()}, indent=2)
        )
    log.info("done: %d steps on %d images in %.1fs", record.steps, record.trained_images, record.seconds)
