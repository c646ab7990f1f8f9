"""Rule generate: DDIM samples of the full model, one seed per image, stored like a dataset."""

import numpy as np

from diffattr.data import ImageSet, write_imageset
from diffattr.families import load_model
from diffattr.models import resolve_device
from diffattr.runtime import job
from diffattr.sampling import ddim_sample, sample_prompts

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = snakemake.params.generate
    model = load_model(snakemake.input.model).to(resolve_device(snakemake.params.device))
    seeds = cfg["seed"] * 1_000_003 + np.arange(cfg["num_images"], dtype=np.int64)
    images = ddim_sample(model, seeds, cfg["num_inference_steps"], cfg["eta"], cfg["batch_size"])
    n = len(images)
    samples = ImageSet(images, np.full(n, -1), np.full(n, -1), seeds, captions=sample_prompts(model, n))
    write_imageset(snakemake.output[0], samples, attrs={"model": snakemake.input.model, **cfg})
    log.info("generated %d images", n)
