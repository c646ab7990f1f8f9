"""Rule local_scores: a method scored from one featurizer's gradients of the full model by its kind's scoring
function (diffattr.registry), at the damping of best held-out LDS when the kind has one."""

from diffattr.attribution import GradientInputs, read_features
from diffattr.metrics import select_lambda, stack_outputs
from diffattr.registry import method_kind, score_function
from diffattr.runtime import job
from diffattr.store import read_npz, write_arrays

with job(snakemake.log[0]) as log:
    split = snakemake.wildcards.target_split
    p = snakemake.params
    kind = p.method["kind"]
    targets = read_features(snakemake.input.targets)
    inputs = GradientInputs(
        snakemake.input.train, p.attribute["form"], getattr(snakemake.input, "residuals", None)
    )
    score = score_function(kind)(p.method, inputs)
    attrs = {"lambda": None, "kind": kind}
    if not method_kind(kind).damping:
        scores = score(targets, None)
    else:
        subsets = read_npz(snakemake.input.subsets)
        masks, heldout = subsets["masks"], subsets[f"heldout_{split}"]
        outputs = stack_outputs([read_npz(path) for path in snakemake.input.outputs], len(masks), split)
        best, by_lambda = select_lambda(
            lambda lam: score(targets[heldout], lam), p.attribute["lambda_grid"], masks, outputs[:, heldout]
        )
        log.info("%s; held-out LDS by lambda %s; chosen %g", inputs.details(), by_lambda, best)
        scores = score(targets, best)
        attrs.update(
            {
                "lambda": best,
                "heldout_lds_by_lambda": {str(k): v for k, v in by_lambda.items()},
                **inputs.details(),
                "n_heldout_targets": int(heldout.sum()),
            }
        )
    write_arrays(snakemake.output[0], {"scores": scores.astype("float32")}, attrs=attrs, chunk_rows=256)
    log.info("scores %s", scores.shape)
