"""Rule shapley_report: the contributor-valuation page with its value and Shapley-LDS figures."""

import json
from pathlib import Path

import pandas as pd

from diffattr.report import shapley_lds_figure, values_figure, write_shapley_report
from diffattr.runtime import job

with job(snakemake.log[0]):
    p = snakemake.params
    values = {Path(f).stem: pd.read_csv(f) for f in snakemake.input.values}
    lds = pd.read_csv(snakemake.input.lds)
    values_figure(values, snakemake.output.values)
    shapley_lds_figure(lds, snakemake.output.lds, p.level)
    wide = next(iter(values.values()))[["contributor", "name", "images"]].copy()
    for label, table in values.items():
        wide[label] = table["value"]
        wide[f"{label} SE"] = table["stderr"]
    cost = pd.read_csv(snakemake.input.cost)
    pruning = (
        json.loads((Path(snakemake.input.pruned) / "pruning.json").read_text())
        if snakemake.input.pruned
        else None
    )
    cost_note = (
        "Per way, over the fit coalitions: mean steps and seconds of training / fine-tuning one coalition"
        " model; the one-off cost (the full model, plus pruning and its fine-tuning for sparse_ft); the"
        " total; the speed-ups against retraining per model and in total. Job start-up is not counted."
    )
    if pruning:
        pr = pruning["pruning"]
        cost_note += (
            f" Pruning removed {100 * pr['removed_fraction']:.0f}% of channels"
            f" (requested {100 * pr['ratio']:.0f}%),"
            f" {pr['parameters_before']:,} -> {pr['parameters_after']:,} parameters;"
            " fine-tuning the pruned model"
            f" on all data took {pruning['finetune_seconds']:.1f}s once."
        )
    summary = f"{len(wide)} contributors; property {p.prop}; fit coalitions sampled for {p.estimator}."
    if p.prop in ("fid", "kid"):
        summary += f" Lower {p.prop} is better, so values credit the negated {p.prop}: positive = helps."
    write_shapley_report(
        snakemake.output.html,
        [snakemake.output.values, snakemake.output.lds],
        {
            "values": wide,
            "lds": lds,
            "agreement": pd.read_csv(snakemake.input.agreement),
            "cost": cost,
            "counterfactual": pd.read_csv(snakemake.input.counterfactual),
        },
        {"summary": summary, "cost": cost_note},
        dict(p.config),
        [str(f) for f in snakemake.input],
    )
