"""Rule tracin_scores: Diffusion-TracIn / ReTrac summed over the full model's training checkpoints, by the
method kind's scoring function (diffattr.registry)."""

import numpy as np

from diffattr.attribution import read_features
from diffattr.checkpoints import checkpoint_weight, saved_checkpoint
from diffattr.registry import score_function
from diffattr.runtime import job
from diffattr.store import write_arrays

with job(snakemake.log[0]) as log:
    p = snakemake.params
    weighting = p.method["checkpoint_weights"]
    train = np.array_split(np.array(snakemake.input.train), p.checkpoints)
    targets = np.array_split(np.array(snakemake.input.targets), p.checkpoints)

    def checkpoints():
        """(weight_c, train features, target features) of each checkpoint, one in memory at a time."""
        for c in range(p.checkpoints):
            weight = checkpoint_weight(snakemake.input.model, c, weighting)
            log.info(
                "checkpoint %d: %s, weight (%s) %.3g",
                c,
                saved_checkpoint(snakemake.input.model, c),
                weighting,
                weight,
            )
            yield weight, read_features(train[c]), read_features(targets[c])

    scores = score_function(p.method["kind"])(checkpoints())
    write_arrays(
        snakemake.output[0],
        {"scores": scores.astype("float32")},
        attrs={
            "lambda": None,
            "kind": p.method["kind"],
            "checkpoints": p.checkpoints,
            "checkpoint_weights": weighting,
        },
        chunk_rows=256,
    )
    log.info("scores %s", scores.shape)
