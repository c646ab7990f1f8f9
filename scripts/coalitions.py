"""Rule coalitions: the fit coalitions of the chosen estimator and the held-out evaluation coalitions."""

from diffattr.runtime import job
from diffattr.store import read_table, write_npz
from diffattr.valuation import coalition_design, sample_heldout_coalitions

with job(snakemake.log[0]) as log:
    p = snakemake.params
    n = len(read_table(snakemake.input.table, ["contributor", "name", "images"]))
    fit, fit_weights, fit_enumerated = coalition_design(
        p.estimator, n, p.num_coalitions, p.seed, p.enumerate_sizes
    )
    heldout = sample_heldout_coalitions(
        n, p.heldout["num_coalitions"], p.heldout["alpha"], p.seed + 1, exclude=fit
    )
    # the datamodel baseline's own coalitions (alpha of the contributors), none of them held out
    dm = sample_heldout_coalitions(
        n, p.datamodel["num_coalitions"], p.datamodel["alpha"], p.seed + 2, exclude=heldout
    )
    write_npz(
        snakemake.output[0],
        fit=fit,
        fit_weights=fit_weights,
        fit_enumerated=fit_enumerated,
        dm=dm,
        heldout=heldout,
        seed=p.seed,
        estimator=p.estimator,
    )
    log.info(
        "%d contributors: %d fit coalitions (%s), %d datamodel, %d held-out (alpha %.2f)",
        n,
        len(fit),
        p.estimator,
        len(dm),
        len(heldout),
        p.heldout["alpha"],
    )
