"""Rule tracin_scores: Diffusion-TracIn / ReTrac summed over the full model's training checkpoints."""

import numpy as np

from diffattr.attribution import read_features
from diffattr.checkpoints import saved_checkpoint
from diffattr.influence import tracin
from diffattr.runtime import job
from diffattr.store import write_arrays

with job(snakemake.log[0]) as log:
    p = snakemake.params
    train = np.array_split(np.array(snakemake.input.train), p.checkpoints)
    targets = np.array_split(np.array(snakemake.input.targets), p.checkpoints)

    def checkpoints():
        """(lr_c, train features, target features) of each checkpoint, one checkpoint in memory at a time."""
        for c in range(p.checkpoints):
            path, lr = saved_checkpoint(snakemake.input.model, c)
            log.info("checkpoint %d: %s, lr %.3g", c, path, lr)
            yield lr, read_features(train[c]), read_features(targets[c])

    scores = tracin(checkpoints(), renormalize=p.method["kind"].startswith("retrac"))
    write_arrays(
        snakemake.output[0],
        {"scores": scores.astype("float32")},
        attrs={"lambda": None, "kind": p.method["kind"], "checkpoints": p.checkpoints},
        chunk_rows=256,
    )
    log.info("scores %s", scores.shape)
