"""Rules coalition_property(_batch*): each coalition model generates the fixed-seed batch; its property.

`params.models` lists each model's way, coalition and seed, in the order of its input models and outputs.
"""

import json
import time

import numpy as np
import torch

from diffattr.batching import each_model
from diffattr.device import resolve_device
from diffattr.families import load_model
from diffattr.properties import AestheticScorer, attributed_value, feature_extractor, measure_property
from diffattr.registry import PROPERTIES
from diffattr.runtime import job
from diffattr.sampling import ddim_sample
from diffattr.store import read_npz, write_json

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = snakemake.params.prop
    device = resolve_device(snakemake.params.device)
    extractor = aesthetic = reference = None
    if PROPERTIES[cfg["name"]].measured_with == "clip":
        clip = cfg["clip"]
        aesthetic = AestheticScorer(clip["model"], clip["weights"], clip["head"], device)
    else:
        extractor = feature_extractor(cfg, snakemake.input.get("classifier"), device)
        if "reference" in snakemake.input.keys():
            reference = read_npz(snakemake.input.reference)["features"]
    paths = snakemake.input.models if "models" in snakemake.input.keys() else [snakemake.input.model]
    models = [{**spec, "path": path} for spec, path in zip(snakemake.params.models, paths, strict=True)]
    seeds = cfg["seed"] * 1_000_003 + np.arange(cfg["num_images"], dtype=np.int64)
    for spec, output in each_model(models, snakemake.output, snakemake.threads):
        start = time.perf_counter()
        model = load_model(spec["path"]).to(device)
        pixels = ddim_sample(model, seeds, cfg["num_inference_steps"], 0.0, 256, cfg["guidance_scale"])
        generated = torch.from_numpy(pixels).float() / 127.5 - 1
        measured = measure_property(
            cfg["name"],
            generated,
            extractor,
            reference,
            aesthetic,
            cfg["clip"]["quantile"],
            seed=cfg["seed"],
            clusters=cfg["clusters"],
            neighbours=cfg["neighbours"],
            cluster_distance=cfg["cluster_distance"],
        )
        value = attributed_value(cfg["name"], measured)
        seconds = time.perf_counter() - start  # loading, generation and measurement: this model's share
        write_json(
            output, {"property": cfg["name"], "value": value, "measured": measured, "seconds": seconds}
        )
        log.info("value %.4f; measured %s", value, json.dumps(measured))
