"""Rule counterfactual_model: retrain without a target's top-scored training images, regenerate it."""

import json

import numpy as np

from diffattr.counterfactual import RANDOM, counterfactual_targets, removed_images, retrain_and_regenerate
from diffattr.data import read_imageset
from diffattr.models import resolve_device
from diffattr.runtime import job
from diffattr.store import atomic_path, open_group, read_npz, write_npz

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    method, slot = snakemake.wildcards.cf_method, int(snakemake.wildcards.j)
    target = int(counterfactual_targets(read_npz(snakemake.input.subsets)["heldout_gen"], slot + 1)[slot])
    image_seed = int(read_imageset(snakemake.input.samples).source_index[target])
    train = read_imageset(snakemake.input.train)
    scores = None if method == RANDOM else open_group(snakemake.input.scores)["scores"][target]
    random_seed = None if p.random_seed is None else p.random_seed * 1_000_003 + target
    removed = removed_images(scores, len(train), p.num_removed, random_seed)
    keep = np.ones(len(train), bool)
    keep[removed] = False
    log.info("%s, target %d (seed %d): removing %d training images", method, target, image_seed, len(removed))
    with atomic_path(snakemake.output.model) as tmp:
        model, record, image = retrain_and_regenerate(
            train.images,
            keep,
            p.model,
            p.scheduler,
            p.train,
            p.generate,
            p.seed,
            image_seed,
            resolve_device(p.device),
        )
        model.save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps(record.__dict__, indent=2))
    write_npz(snakemake.output.sample, image=image, removed=removed, target=target, image_seed=image_seed)
    log.info("retrained on %d images in %.1fs and regenerated the target", int(keep.sum()), record.seconds)
