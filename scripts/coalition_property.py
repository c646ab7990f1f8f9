"""Rule coalition_property: generate the fixed-seed batch with a coalition model and measure the property."""

import json

import numpy as np
import torch

from diffattr.models import PixelDiffusion, resolve_device
from diffattr.properties import AestheticScorer, attributed_value, feature_extractor, measure_property
from diffattr.runtime import job
from diffattr.sampling import ddim_sample
from diffattr.store import read_npz, write_json

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = snakemake.params.prop
    device = resolve_device(snakemake.params.device)
    model = PixelDiffusion.from_pretrained(snakemake.input.model).to(device)
    seeds = cfg["seed"] * 1_000_003 + np.arange(cfg["num_images"], dtype=np.int64)
    pixels = ddim_sample(model, seeds, cfg["num_inference_steps"], 0.0, 256)
    generated = torch.from_numpy(pixels).float() / 127.5 - 1
    extractor = aesthetic = reference = None
    if cfg["name"] == "aesthetic":
        clip = cfg["clip"]
        aesthetic = AestheticScorer(clip["model"], clip["weights"], clip["head"], device)
    else:
        extractor = feature_extractor(cfg, snakemake.input.get("classifier"), device)
        if "reference" in snakemake.input.keys():
            reference = read_npz(snakemake.input.reference)["features"]
    measured = measure_property(
        cfg["name"], generated, extractor, reference, aesthetic, cfg["clip"]["quantile"], seed=cfg["seed"]
    )
    value = attributed_value(cfg["name"], measured)
    write_json(snakemake.output[0], {"property": cfg["name"], "value": value, "measured": measured})
    log.info("value %.4f; measured %s", value, json.dumps(measured))
