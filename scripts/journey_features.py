"""Rule featurize_journey: Journey-TRAK target features of one shard of the generated set's trajectories."""

import numpy as np

from diffattr.device import resolve_device
from diffattr.families import load_model
from diffattr.gradients import FeaturizerSpec, featurize_trajectory
from diffattr.runtime import job
from diffattr.store import open_group, write_arrays

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    start = int(snakemake.wildcards.shard) * p.shard_size
    stored = open_group(snakemake.input.trajectory)  # only this shard's rows are read
    trajectory = {
        "latents": stored["latents"][start : start + p.shard_size],
        "predicted_noise": stored["predicted_noise"][start : start + p.shard_size],
        "timesteps": stored["timesteps"][:],
    }
    model = load_model(snakemake.input.model).to(resolve_device(p.device))
    spec = FeaturizerSpec.from_config(p.featurizer)
    features = featurize_trajectory(model, trajectory, spec, p.steps, noise_seed=p.featurizer["noise_seed"])
    write_arrays(
        snakemake.output[0],
        {"features": features, "position": np.arange(start, start + len(features))},
        attrs={"start": start, "steps": p.steps, **p.featurizer},
        chunk_rows=p.batch_size,
    )
    log.info("wrote %s features", features.shape)
