"""Rule local_scores: DAS, relative / renormalised IF (damping chosen on held-out targets) and gradient
dot / cosine, from one featurizer's gradients of the full model."""

from diffattr.attribution import TrakScorer, read_features
from diffattr.influence import damped_score_function, gradient_similarity
from diffattr.metrics import select_lambda, stack_outputs
from diffattr.runtime import job
from diffattr.store import read_npz, write_arrays

with job(snakemake.log[0]) as log:
    split = snakemake.wildcards.target_split
    p = snakemake.params
    targets = read_features(snakemake.input.targets)
    attrs = {"lambda": None, "kind": p.method["kind"]}
    if p.method["kind"] in ("grad_dot", "grad_cosine"):
        train = read_features(snakemake.input.train)
        scores = gradient_similarity(targets, train, cosine=p.method["kind"] == "grad_cosine")
    else:
        subsets = read_npz(snakemake.input.subsets)
        masks, heldout = subsets["masks"], subsets[f"heldout_{split}"]
        outputs = stack_outputs([read_npz(path) for path in snakemake.input.outputs], len(masks), split)
        scorer = TrakScorer(snakemake.input.train, p.attribute["form"])
        residuals = getattr(snakemake.input, "residuals", None)  # kind das only
        errors = read_npz(residuals)["errors"] if residuals else None
        score = damped_score_function(p.method, scorer, errors)
        best, by_lambda = select_lambda(
            lambda lam: score(targets[heldout], lam), p.attribute["lambda_grid"], masks, outputs[:, heldout]
        )
        log.info("form %s; held-out LDS by lambda %s; chosen %g", scorer.form, by_lambda, best)
        scores = score(targets, best)
        attrs.update(
            {
                "lambda": best,
                "heldout_lds_by_lambda": {str(k): v for k, v in by_lambda.items()},
                "form": scorer.form,
                "n_heldout_targets": int(heldout.sum()),
            }
        )
    write_arrays(snakemake.output[0], {"scores": scores.astype("float32")}, attrs=attrs, chunk_rows=256)
    log.info("scores %s", scores.shape)
