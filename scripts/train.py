"""Rules train_full and train_lds: train a model on all training images or on one LDS subset."""

import json

from diffattr.data import read_imageset
from diffattr.models import PixelDiffusion, build_scheduler, build_unet, resolve_device
from diffattr.runtime import job
from diffattr.store import atomic_path, read_npz
from diffattr.training import train

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    device = resolve_device(p.device)
    data = read_imageset(snakemake.input.train)
    images = data.tensor()
    if p.subset is not None:
        images = images[read_npz(snakemake.input.subsets)["masks"][p.subset]]
    seed = int(snakemake.wildcards.seed)
    model = PixelDiffusion(
        unet=build_unet(p.model, sample_size=images.shape[-1], channels=images.shape[1], seed=seed),
        scheduler=build_scheduler(p.scheduler),
    )
    log.info("training on %d images, %s, device %s", len(images), p.train, device)
    with atomic_path(snakemake.output[0]) as tmp:
        record = train(model, images, p.train, seed=seed, device=device, checkpoint_dir=tmp / "checkpoints")
        model.save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps(record.__dict__, indent=2))
    log.info("done in %.1fs", record.seconds)
