"""Rule trak_scores: TRAK / D-TRAK scores of one target split, damping chosen on held-out targets.

With `ensemble: S`, the gradient shards of the S full models come in model order (params.members) and
the scores are the mean of the S models' scores at one damping."""

import numpy as np

from diffattr.attribution import TrakScorer, ensemble_scores, read_features
from diffattr.metrics import select_lambda, stack_outputs
from diffattr.runtime import job
from diffattr.store import read_npz, write_arrays

with job(snakemake.log[0]) as log:
    split = snakemake.wildcards.target_split
    cfg = snakemake.params.attribute
    subsets = read_npz(snakemake.input.subsets)
    masks, heldout = subsets["masks"], subsets[f"heldout_{split}"]
    outputs = stack_outputs([read_npz(p) for p in snakemake.input.outputs], len(masks), split)
    members = [
        (TrakScorer(train, cfg["form"]), read_features(targets))
        for train, targets in zip(
            np.array_split(np.array(snakemake.input.train), snakemake.params.members),
            np.array_split(np.array(snakemake.input.targets), snakemake.params.members),
            strict=True,
        )
    ]
    best, by_lambda = select_lambda(
        lambda lam: ensemble_scores([(s, t[heldout]) for s, t in members], lam),
        cfg["lambda_grid"],
        masks,
        outputs[:, heldout],
    )
    scorer = members[0][0]
    log.info(
        "%d model(s), form %s, N=%d, k=%d; held-out LDS by lambda %s; chosen %g",
        len(members),
        scorer.form,
        scorer.n,
        scorer.k,
        by_lambda,
        best,
    )
    write_arrays(
        snakemake.output[0],
        {"scores": ensemble_scores(members, best).astype("float32")},
        attrs={
            "lambda": best,
            "heldout_lds_by_lambda": {str(k): v for k, v in by_lambda.items()},
            "form": scorer.form,
            "ensemble": len(members),
            "n_heldout_targets": int(heldout.sum()),
        },
        chunk_rows=256,
    )
