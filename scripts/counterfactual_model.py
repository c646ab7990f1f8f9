"""Rules counterfactual_model(_batch*): retrain without a target's top-scored training images, regenerate it.

`params.models` lists each model's method, target slot, scores file and random seed (one, or a batch
made in turn, each into its own outputs: diffattr.batching)."""

import json

import numpy as np

from diffattr.batching import each_model
from diffattr.counterfactual import counterfactual_targets, removed_images, retrain_and_regenerate
from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.runtime import job
from diffattr.store import atomic_path, open_group, read_npz, write_npz


def as_list(paths):
    return [paths] if isinstance(paths, str) else list(paths)


with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    device = resolve_device(p.device)
    heldout = read_npz(snakemake.input.subsets)["heldout_gen"]
    seeds = read_imageset(snakemake.input.samples).source_index
    train = read_imageset(snakemake.input.train)
    samples = as_list(snakemake.output.samples)
    for (spec, model_dir), sample in zip(
        each_model(p.models, as_list(snakemake.output.models), snakemake.threads), samples, strict=True
    ):
        slot = spec["slot"]
        target = int(counterfactual_targets(heldout, slot + 1)[slot])
        image_seed = int(seeds[target])
        scores = None if spec["scores"] is None else open_group(spec["scores"])["scores"][target]
        random_seed = None if spec["random_seed"] is None else spec["random_seed"] * 1_000_003 + target
        removed = removed_images(scores, len(train), p.num_removed, random_seed)
        keep = np.ones(len(train), bool)
        keep[removed] = False
        positive = len(removed) if scores is None else int((np.asarray(scores)[removed] > 0).sum())
        log.info(
            "%s, target %d (seed %d): removing %d images (%d with a positive score)",
            *(spec["method"], target, image_seed, len(removed), positive),
        )
        with atomic_path(model_dir) as tmp:
            model, record, image = retrain_and_regenerate(
                train.images,
                keep,
                p.model,
                p.scheduler,
                p.train,
                p.generate,
                p.seed,
                image_seed,
                device,
            )
            model.save_pretrained(tmp)
            (tmp / "training.json").write_text(json.dumps(record.__dict__, indent=2))
        write_npz(
            sample, image=image, removed=removed, positive=positive, target=target, image_seed=image_seed
        )
        log.info(
            "retrained on %d images in %.1fs and regenerated the target", int(keep.sum()), record.seconds
        )
