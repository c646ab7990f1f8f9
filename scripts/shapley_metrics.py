"""Rule shapley_metrics: Shapley LDS on held-out coalitions, agreement of each way with retraining,
the cost of each way per coalition, and the counterfactual property after removing top / bottom values."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from diffattr.metrics import correlation_ci, shapley_lds_per_seed
from diffattr.planted import planted_table
from diffattr.runtime import job
from diffattr.store import read_npz, write_csv
from diffattr.unlearning import coalition_costs

with job(snakemake.log[0]) as log:
    p = snakemake.params
    boot = dict(n_boot=p.bootstrap, level=p.level, seed=p.seed)

    def retrained(files, coalitions):
        """Property of each coalition's retrained models, one per seed (files ordered coalition-major)."""
        files = iter(files)
        return {c: [json.loads(Path(next(files)).read_text())["value"] for _ in p.seeds] for c in coalitions}

    heldout_masks = read_npz(snakemake.input.coalitions)["heldout"]
    measured = np.array(list(retrained(snakemake.input.heldout, p.heldout).values()))  # coalitions x seeds
    values = {Path(f).stem: pd.read_csv(f) for f in snakemake.input.values}

    rows = []
    for name, table in values.items():
        lds = shapley_lds_per_seed(table["value"].to_numpy(), heldout_masks, measured, **boot)
        estimator, how = name.split("-", 1)
        if not np.isfinite(lds["lds"]):
            log.warning(
                "%s: Shapley LDS undefined (NaN): the values predict the same property for every held-out "
                "coalition (e.g. every value 0: the fit coalitions' properties tie)",
                name,
            )
        rows.append(
            {
                "estimator": estimator,
                "how": how,
                **lds,
                "coalitions": len(measured),
                "seeds": measured.shape[1],
            }
        )
    write_csv(snakemake.output.lds, pd.DataFrame(rows))

    rows = []
    for name, table in values.items():
        estimator, how = name.split("-", 1)
        gold = values.get(f"{estimator}-retrain")
        if how == "retrain" or gold is None:
            continue
        for method in ("pearson", "spearman"):
            r, low, high = correlation_ci(
                table["value"].to_numpy(), gold["value"].to_numpy(), method=method, **boot
            )
            rows.append(
                {
                    "estimator": estimator,
                    "how": how,
                    "versus": "retrain",
                    "method": method,
                    "r": r,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    write_csv(
        snakemake.output.agreement,
        pd.DataFrame(rows, columns=["estimator", "how", "versus", "method", "r", "ci_low", "ci_high"]),
    )

    records = [
        {
            **json.loads((Path(m) / "coalition.json").read_text()),
            "property_seconds": json.loads(Path(f).read_text())["seconds"],
        }
        for m, f in zip(snakemake.input.models, snakemake.input.properties, strict=True)
    ]
    full_seconds = json.loads((Path(snakemake.input.full) / "coalition.json").read_text())["seconds"]
    one_off = {"ft": full_seconds, "gradient_ascent": full_seconds}
    if snakemake.input.pruned:
        pruning = json.loads((Path(snakemake.input.pruned) / "pruning.json").read_text())
        one_off["sparse_ft"] = full_seconds + pruning["finetune_seconds"]
    write_csv(snakemake.output.cost, coalition_costs(records, one_off))

    per = retrained(snakemake.input.counterfactual, p.counterfactual + ["full"])
    rows = []
    for name in p.counterfactual:
        side, how = name.split("-", 1)
        rows.append(
            {
                "ranked_by": f"{p.estimator}-{how}",
                "removed": side,
                "property": p.prop,
                "value": np.mean(per[name]),
                "stderr": np.std(per[name], ddof=1) / np.sqrt(len(per[name]))
                if len(per[name]) > 1
                else np.nan,
                "full": np.mean(per["full"]),
                "change": np.mean(per[name]) - np.mean(per["full"]),
            }
        )
    write_csv(snakemake.output.counterfactual, pd.DataFrame(rows))
    write_csv(snakemake.output.planted, planted_table(values))
    log.info("Shapley LDS:\n%s", pd.read_csv(snakemake.output.lds).to_string())
