"""Rules train_full and train_lds(_batch*): train models on all training images or on LDS subsets.

`params.models` lists each model's subset (None = all images) and seed; a batch job trains them in
turn, each into its own output directory (diffattr.batching).
"""

import json

from diffattr.batching import each_model
from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.families import build_model, distinct_prompts
from diffattr.runtime import job
from diffattr.store import atomic_path, read_npz
from diffattr.training import train

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    device = resolve_device(p.device)
    data = read_imageset(snakemake.input.train)
    all_images, all_captions = data.tensor(), data.captions
    masks = read_npz(snakemake.input.subsets)["masks"] if "subsets" in snakemake.input.keys() else None
    for spec, output in each_model(p.models, snakemake.output, snakemake.threads):
        rows = slice(None) if spec["subset"] is None else masks[spec["subset"]]
        images = all_images[rows]
        captions = None if all_captions is None else all_captions[rows]
        seed = spec["seed"]
        model = build_model(p.model, p.scheduler, images.shape[1:], seed, distinct_prompts(all_captions))
        log.info("training on %d images, %s, device %s", len(images), p.train, device)
        with atomic_path(output) as tmp:
            record = train(
                model,
                images,
                p.train,
                seed=seed,
                device=device,
                checkpoint_dir=tmp / "checkpoints",
                captions=captions,
            )
            model.save_pretrained(tmp)
            (tmp / "training.json").write_text(json.dumps(record.__dict__, indent=2))
        log.info("done in %.1fs", record.seconds)
