"""Rule coalitions: the fit coalitions of the chosen estimator and the held-out evaluation coalitions."""

import pandas as pd

from diffattr.runtime import job
from diffattr.store import write_npz
from diffattr.valuation import coalition_design, sample_heldout_coalitions

with job(snakemake.log[0]) as log:
    p = snakemake.params
    n = len(pd.read_csv(snakemake.input.table))
    fit = coalition_design(p.estimator, n, p.num_coalitions, p.seed)
    heldout = sample_heldout_coalitions(n, p.heldout["num_coalitions"], p.heldout["alpha"], p.seed + 1)
    write_npz(snakemake.output[0], fit=fit, heldout=heldout, seed=p.seed, estimator=p.estimator)
    log.info(
        "%d contributors: %d fit coalitions (%s), %d held-out (alpha %.2f)",
        n,
        len(fit),
        p.estimator,
        len(heldout),
        p.heldout["alpha"],
    )
