"""Rule prune: prune the full model once (structured, magnitude) and fine-tune it on all the data."""

import json

from diffattr.data import read_imageset
from diffattr.models import PixelDiffusion, resolve_device
from diffattr.pruning import prune_unet
from diffattr.runtime import job
from diffattr.store import atomic_path
from diffattr.training import train

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    device = resolve_device(p.device)
    model = PixelDiffusion.from_pretrained(snakemake.input.full)
    record = prune_unet(model.unet, p.pruning["ratio"])
    log.info("pruned: %s", record.to_dict())
    images = read_imageset(snakemake.input.train).tensor()
    with atomic_path(snakemake.output[0]) as tmp:
        summary = {"pruning": record.to_dict(), "finetune_seconds": 0.0}
        if p.train["steps"]:
            summary["finetune_seconds"] = train(model, images, p.train, seed=p.seed, device=device).seconds
        model.to("cpu").save_pretrained(tmp)
        (tmp / "pruning.json").write_text(json.dumps(summary, indent=2))
    log.info("fine-tuned on %d images in %.1fs", len(images), summary["finetune_seconds"])
