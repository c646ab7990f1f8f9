"""Rule prune: prune the full model once (UNet channels, or LoRA rank pairs, by magnitude) and fine-tune
it on all the data."""

import json

from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.families import load_model
from diffattr.runtime import job
from diffattr.store import atomic_path
from diffattr.training import train

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    device = resolve_device(p.device)
    model = load_model(snakemake.input.full)
    record = model.prune(p.pruning["ratio"], p.pruning["lora_scope"])
    log.info("pruned: %s", record)
    data = read_imageset(snakemake.input.train)
    images = data.tensor()
    with atomic_path(snakemake.output[0]) as tmp:
        summary = {"pruning": record, "finetune_seconds": 0.0}
        if p.train["steps"]:
            summary["finetune_seconds"] = train(
                model, images, p.train, seed=p.seed, device=device, captions=data.captions
            ).seconds
        model.to("cpu").save_pretrained(tmp)
        (tmp / "pruning.json").write_text(json.dumps(summary, indent=2))
    log.info("fine-tuned on %d images in %.1fs", len(images), summary["finetune_seconds"])
