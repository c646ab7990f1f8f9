"""Rules coalition_model(_batch*): the models of coalitions of contributors, made one way, with their cost.

`params.models` lists each model's way, coalition and seed (one, or a batch made in turn).
"""

import json
from dataclasses import asdict

import pandas as pd

from diffattr.batching import each_model
from diffattr.contributors import members
from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.families import build_model, distinct_prompts, load_model
from diffattr.runtime import job
from diffattr.store import atomic_path, read_npz
from diffattr.unlearning import coalition_model
from diffattr.valuation import coalition_mask

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    device = resolve_device(p.device)
    data = read_imageset(snakemake.input.train)
    values = (
        pd.read_csv(snakemake.input.values)["value"].to_numpy()
        if "values" in snakemake.input.keys()
        else None
    )
    coalitions = read_npz(snakemake.input.coalitions)
    base = load_model(snakemake.input.base) if "base" in snakemake.input.keys() else None
    for spec, output in each_model(p.models, snakemake.output, snakemake.threads):
        coalition = coalition_mask(spec["coalition"], coalitions, values, p.fraction)
        images = data.tensor()
        seed = spec["seed"]
        kept = members(data.contributors, coalition)
        fresh = (  # only retraining and the empty coalition start from an untrained model
            build_model(p.model, p.scheduler, images.shape[1:], seed, distinct_prompts(data.captions))
            if spec["how"] == "retrain" or not kept.any()
            else None
        )
        log.info(
            "%s %s: %d of %d contributors, %d images",
            spec["how"],
            spec["coalition"],
            coalition.sum(),
            len(coalition),
            kept.sum(),
        )
        model, record = coalition_model(
            spec["how"], kept, images, fresh, base, p.train, seed, device, data.captions
        )
        with atomic_path(output) as tmp:
            model.to("cpu").save_pretrained(tmp)
            (tmp / "coalition.json").write_text(
                json.dumps({**asdict(record), "coalition": coalition.tolist()}, indent=2)
            )
        log.info("done: %d steps on %d images in %.1fs", record.steps, record.trained_images, record.seconds)
