"""Rule ekfac_scores: EK-FAC influence scores of one target split, damping chosen on held-out targets."""

from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.ekfac import draw_count, ekfac_score_grid, factors_from_arrays
from diffattr.families import load_model
from diffattr.gradients import FeaturizerSpec
from diffattr.metrics import select_lambda, stack_outputs
from diffattr.runtime import job
from diffattr.store import read_npz, write_arrays

with job(snakemake.log[0], snakemake.threads) as log:
    split = snakemake.wildcards.target_split
    p = snakemake.params
    subsets = read_npz(snakemake.input.subsets)
    masks, heldout = subsets["masks"], subsets[f"heldout_{split}"]
    outputs = stack_outputs([read_npz(path) for path in snakemake.input.outputs], len(masks), split)
    model = load_model(snakemake.input.model).to(resolve_device(p.device))
    train, targets = read_imageset(snakemake.input.train), read_imageset(snakemake.input.targets)
    grid = p.attribute["lambda_grid"]
    by_grid = ekfac_score_grid(
        model,
        factors_from_arrays(read_npz(snakemake.input.factors)),
        train.tensor(),
        targets.tensor(),
        FeaturizerSpec.from_config(p.featurizer),
        p.featurizer["noise_seed"],
        draw_count(p.method["draws"]["gradients"]),
        grid,
        train.captions,
        targets.captions,
    )
    best, by_lambda = select_lambda(lambda lam: by_grid[lam][heldout], grid, masks, outputs[:, heldout])
    log.info("held-out LDS by lambda %s; chosen %g", by_lambda, best)
    write_arrays(
        snakemake.output[0],
        {"scores": by_grid[best].astype("float32")},
        attrs={
            "lambda": best,
            "kind": p.method["kind"],
            "heldout_lds_by_lambda": {str(k): v for k, v in by_lambda.items()},
            "n_heldout_targets": int(heldout.sum()),
        },
        chunk_rows=256,
    )
