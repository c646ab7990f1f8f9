"""Rule shapley_values: one value per contributor from the fit coalitions' properties, with bootstrap SEs."""

import json

import numpy as np

from diffattr.registry import ESTIMATORS
from diffattr.runtime import job
from diffattr.store import read_npz, read_table, write_csv
from diffattr.valuation import estimate_values

with job(snakemake.log[0]) as log:
    p, wc = snakemake.params, snakemake.wildcards
    table = read_table(snakemake.input.table, ["contributor", "name", "images"])
    measured = {
        c: json.loads(open(f).read())["value"]
        for c, f in zip(p.coalitions, snakemake.input.properties, strict=True)
    }
    # v(empty), v(full): the retrained models' (shapley.endpoints: retrain) or the way's own
    empty, full = (json.loads(open(f).read())["value"] for f in snakemake.input.endpoints)
    coalitions = read_npz(snakemake.input.coalitions)
    # the datamodel baseline is fitted on its own coalitions when it has them, else on the fit design
    estimator = ESTIMATORS[wc.estimator]
    kind = "dm" if estimator.own_coalitions and len(coalitions["dm"]) else "fit"
    masks = coalitions[kind]
    values = np.array([measured[f"{kind}{i}"] for i in range(len(masks))])
    design = kind == "fit" and estimator.weighted
    weights = coalitions["fit_weights"] if design else None
    enumerated = int(coalitions["fit_enumerated"]) if design else 0
    result = estimate_values(
        wc.estimator,
        masks,
        values,
        empty,
        full,
        p.bootstrap,
        p.seed,
        weights,
        enumerated,
    )
    table["value"], table["stderr"] = result.values, result.stderr
    table["property"], table["estimator"], table["how"] = p.prop, wc.estimator, wc.how
    write_csv(snakemake.output[0], table)
    log.info(
        "v(empty) %.4f, v(full) %.4f (%s), sum of values %.4f; own v(empty) %.4f, v(full) %.4f",
        empty,
        full,
        p.endpoints,
        result.values.sum(),
        measured["empty"],
        measured["full"],
    )
