"""Rule das_residuals: the full model's error on every training image at a featurizer's timesteps (DAS)."""

from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.families import load_model
from diffattr.outputs import evenly_spaced_timesteps, per_timestep_losses
from diffattr.runtime import job
from diffattr.store import write_npz

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    model = load_model(snakemake.input.model).to(resolve_device(p.device))
    data = read_imageset(snakemake.input.train)
    timesteps = evenly_spaced_timesteps(p.timesteps, model.scheduler.config.num_train_timesteps)
    errors = per_timestep_losses(model, data.tensor(), timesteps, p.noise_seed, p.batch_size, data.captions)
    write_npz(snakemake.output[0], errors=errors, timesteps=timesteps)
    log.info("errors %s, mean %.4f", errors.shape, errors.mean())
