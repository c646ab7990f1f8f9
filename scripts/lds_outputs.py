"""Rules lds_outputs(_batch*): each retrained model's diffusion loss on every val and generated target.

`params.models` lists each model's subset and seed, in the order of `input.models` and the outputs.
"""

from diffattr.batching import each_model
from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.families import load_model
from diffattr.outputs import evenly_spaced_timesteps, measure_loss
from diffattr.runtime import job
from diffattr.store import write_npz

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = snakemake.params.lds
    device = resolve_device(snakemake.params.device)
    targets = {split: read_imageset(snakemake.input[split]) for split in ("val", "gen")}
    models = [
        {**spec, "path": path}
        for spec, path in zip(snakemake.params.models, snakemake.input.models, strict=True)
    ]
    for spec, output in each_model(models, snakemake.output, snakemake.threads):
        model = load_model(spec["path"]).to(device)
        timesteps = evenly_spaced_timesteps(cfg["timesteps"], model.scheduler.config.num_train_timesteps)
        losses = {
            split: measure_loss(
                model, data.tensor(), timesteps, cfg["noise_seeds"], cfg["batch_size"], data.captions
            )
            for split, data in targets.items()
        }
        write_npz(output, subset=spec["subset"], seed=spec["seed"], **losses)
        log.info("mean loss: %s", {k: float(v.mean()) for k, v in losses.items()})
