"""Rule lds_outputs: one retrained model's diffusion loss on every val and generated target."""

from diffattr.data import read_imageset
from diffattr.models import PixelDiffusion, resolve_device
from diffattr.outputs import evenly_spaced_timesteps, measure_loss
from diffattr.runtime import job
from diffattr.store import write_npz

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = snakemake.params.lds
    model = PixelDiffusion.from_pretrained(snakemake.input.model).to(resolve_device(snakemake.params.device))
    timesteps = evenly_spaced_timesteps(cfg["timesteps"], model.scheduler.config.num_train_timesteps)
    losses = {
        split: measure_loss(
            model,
            read_imageset(snakemake.input[split]).tensor(),
            timesteps,
            cfg["noise_seeds"],
            cfg["batch_size"],
        )
        for split in ("val", "gen")
    }
    write_npz(
        snakemake.output[0],
        subset=int(snakemake.wildcards.m),
        seed=int(snakemake.wildcards.seed),
        **losses,
    )
    log.info("mean loss: %s", {k: float(v.mean()) for k, v in losses.items()})
