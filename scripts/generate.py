"""Rule generate: DDIM samples of the full model (guided when generate.guidance_scale asks), one seed
per image, stored like a dataset.

With a second output (samples/full_trajectory.zarr, asked for when some method is Journey-TRAK)
the run's visited x_t, predicted noise and final latents go there too."""

import numpy as np

from diffattr.data import ImageSet, write_imageset
from diffattr.device import resolve_device
from diffattr.families import load_model
from diffattr.runtime import job
from diffattr.sampling import ddim_sample, ddim_trajectory, sample_prompts
from diffattr.store import write_arrays

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = snakemake.params.generate
    model = load_model(snakemake.input.model).to(resolve_device(snakemake.params.device))
    seeds = cfg["seed"] * 1_000_003 + np.arange(cfg["num_images"], dtype=np.int64)
    args = (model, seeds, cfg["num_inference_steps"], cfg["eta"], cfg["batch_size"], cfg["guidance_scale"])
    if len(snakemake.output) > 1:
        images, trajectory = ddim_trajectory(*args)
        write_arrays(snakemake.output[1], trajectory, attrs={"seeds": seeds}, chunk_rows=cfg["batch_size"])
        log.info("stored the trajectories %s", trajectory["latents"].shape)
    else:
        images = ddim_sample(*args)
    n = len(images)
    samples = ImageSet(images, np.full(n, -1), np.full(n, -1), seeds, captions=sample_prompts(model, n))
    write_imageset(snakemake.output[0], samples, attrs={"model": snakemake.input.model, **cfg})
    log.info("generated %d images", n)
