"""Rule datamodel_scores: empirical influence or ridge datamodel of one target split, fitted on the datamodel
retrains; the ridge penalty is chosen per target by cross-validation over those retrains (datamodel.penalty
cv, D-TRAK's) or once by the LDS of held-out targets on the LDS subsets (heldout_lds)."""

from diffattr.datamodels import datamodel_ridge, datamodel_ridge_cv
from diffattr.metrics import select_lambda, stack_outputs
from diffattr.registry import method_kind, score_function
from diffattr.runtime import job
from diffattr.store import read_npz, write_arrays

with job(snakemake.log[0]) as log:
    p = snakemake.params
    split = snakemake.wildcards.target_split
    fit_masks = read_npz(snakemake.input.datamodel_subsets)["masks"]
    fit_outputs = stack_outputs(
        [read_npz(f) for f in snakemake.input.datamodel_outputs], len(fit_masks), split
    )
    attrs = {"kind": p.kind, "n_models": len(snakemake.input.datamodel_outputs), "lambda": None}
    if not method_kind(p.kind).damping:
        scores = score_function(p.kind)(fit_masks, fit_outputs)
    elif p.datamodel["penalty"] == "cv":
        scores, penalties = datamodel_ridge_cv(
            fit_masks, fit_outputs, p.datamodel["cv_alphas"], p.datamodel["cv_folds"]
        )
        attrs["penalty_by_target"] = penalties.tolist()
        log.info("ridge penalty by %d-fold CV per target: %s", p.datamodel["cv_folds"], penalties.tolist())
    else:
        subsets = read_npz(snakemake.input.subsets)
        masks, heldout = subsets["masks"], subsets[f"heldout_{split}"]
        outputs = stack_outputs([read_npz(f) for f in snakemake.input.outputs], len(masks), split)
        best, by_alpha = select_lambda(
            lambda alpha: datamodel_ridge(fit_masks, fit_outputs[:, heldout], alpha),
            p.datamodel["alpha_grid"],
            masks,
            outputs[:, heldout],
        )
        log.info("held-out LDS by ridge alpha %s; chosen %g", by_alpha, best)
        scores = datamodel_ridge(fit_masks, fit_outputs, best)
        attrs.update({"lambda": best, "heldout_lds_by_lambda": {str(k): v for k, v in by_alpha.items()}})
    write_arrays(snakemake.output[0], {"scores": scores.astype("float32")}, attrs=attrs, chunk_rows=256)
    log.info("%s scores %s from %d models", p.kind, scores.shape, attrs["n_models"])
