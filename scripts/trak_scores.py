"""Rule trak_scores: TRAK / D-TRAK scores of one target split, damping chosen on held-out targets."""

from diffattr.attribution import TrakScorer, read_features
from diffattr.metrics import select_lambda, stack_outputs
from diffattr.runtime import job
from diffattr.store import read_npz, write_arrays

with job(snakemake.log[0]) as log:
    split = snakemake.wildcards.target_split
    cfg = snakemake.params.attribute
    subsets = read_npz(snakemake.input.subsets)
    masks, heldout = subsets["masks"], subsets[f"heldout_{split}"]
    outputs = stack_outputs([read_npz(p) for p in snakemake.input.outputs], len(masks), split)
    scorer = TrakScorer(snakemake.input.train, cfg["form"])
    targets = read_features(snakemake.input.targets)
    best, by_lambda = select_lambda(
        lambda lam: scorer.scores(targets[heldout], lam),
        cfg["lambda_grid"],
        masks,
        outputs[:, heldout],
    )
    log.info(
        "form %s, N=%d, k=%d; held-out LDS by lambda %s; chosen %g",
        scorer.form,
        scorer.n,
        scorer.k,
        by_lambda,
        best,
    )
    write_arrays(
        snakemake.output[0],
        {"scores": scorer.scores(targets, best).astype("float32")},
        attrs={
            "lambda": best,
            "heldout_lds_by_lambda": {str(k): v for k, v in by_lambda.items()},
            "form": scorer.form,
            "n_heldout_targets": int(heldout.sum()),
        },
        chunk_rows=256,
    )
