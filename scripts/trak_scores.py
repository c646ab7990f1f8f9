"""Rule trak_scores: TRAK / D-TRAK scores of one target split, damping chosen on held-out targets.

With an ensemble, the gradient shards of its models come in model order (params.members) and the scores
are their mean: over subsets (D-TRAK's), each model at its own damping chosen on the held-out targets;
over seeds, all at the one damping whose mean is best there."""

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

    def chosen(group):
        """(best damping, held-out LDS by damping) of the mean score of `group`'s members."""
        return select_lambda(
            lambda lam: ensemble_scores([(s, t[heldout]) for s, t in group], lam),
            cfg["lambda_grid"],
            masks,
            outputs[:, heldout],
        )

    ensemble = snakemake.params.ensemble
    if len(members) > 1 and ensemble["over"] == "subsets":
        choices = [chosen([member]) for member in members]
        best = [lam for lam, _ in choices]
        by_lambda = {f"member{i}": {str(k): v for k, v in c.items()} for i, (_, c) in enumerate(choices)}
        attrs = {"lambda": None, "member_lambdas": best, "heldout_lds_by_lambda": by_lambda}
    else:
        best, by_lambda = chosen(members)
        attrs = {"lambda": best, "heldout_lds_by_lambda": {str(k): v for k, v in by_lambda.items()}}
    scorer = members[0][0]
    log.info(
        "%d model(s), form %s, N=%d, k=%d; held-out LDS by lambda %s; chosen %s",
        *(len(members), scorer.form, scorer.n, scorer.k, by_lambda, best),
    )
    write_arrays(
        snakemake.output[0],
        {"scores": ensemble_scores(members, best).astype("float32")},
        attrs={
            **attrs,
            "form": scorer.form,
            "ensemble": len(members),
            "n_heldout_targets": int(heldout.sum()),
        },
        chunk_rows=256,
    )
