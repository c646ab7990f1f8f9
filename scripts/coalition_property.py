"""Rule coalition_property: generate the fixed-seed batch with a coalition model and measure the property."""

import json

import numpy as np
import torch

from diffattr.data import read_imageset
from diffattr.models import PixelDiffusion, resolve_device
from diffattr.properties import (
    AestheticScorer,
    ImageClassifier,
    InceptionFeatures,
    classifier_outputs,
    measure_property,
)
from diffattr.runtime import job
from diffattr.sampling import ddim_sample
from diffattr.store import write_json

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = snakemake.params.prop
    model = PixelDiffusion.from_pretrained(snakemake.input.model).to(resolve_device(snakemake.params.device))
    seeds = cfg["seed"] * 1_000_003 + np.arange(cfg["num_images"], dtype=np.int64)
    generated = (
        torch.from_numpy(ddim_sample(model, seeds, cfg["num_inference_steps"], 0.0, 256)).float() / 127.5 - 1
    )
    extractor = aesthetic = reference = None
    if cfg["name"] == "aesthetic":
        aesthetic = AestheticScorer(cfg["clip"]["model"], cfg["clip"]["weights"], cfg["clip"]["head"])
    else:
        if cfg["features"] == "classifier":
            classifier = ImageClassifier.from_pretrained(snakemake.input.classifier)
            extractor = lambda x: classifier_outputs(classifier, x)  # noqa: E731
        else:
            extractor = InceptionFeatures(cfg["inception_path"])
        reference = extractor(read_imageset(snakemake.input.train).tensor())[1]
    measured = measure_property(
        cfg["name"], generated, extractor, reference, aesthetic, cfg["clip"]["quantile"], seed=cfg["seed"]
    )
    write_json(
        snakemake.output[0], {"property": cfg["name"], "value": measured[cfg["name"]], "all": measured}
    )
    log.info("%s", json.dumps(measured))
