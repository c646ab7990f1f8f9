"""Sections of the contributor branch: values, Shapley LDS, agreement, cost, counterfactual, planted check."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from diffattr.registry import ESTIMATORS, PROPERTIES
from diffattr.report.figures import contributor_counterfactual_figure, shapley_lds_figure, values_figure
from diffattr.report.page import Report, Section
from diffattr.report.published import PUBLISHED, agreement_beside_published


def values_section(report: Report) -> Section | None:
    """Each contributor's value per estimator and way of making coalition models, with bootstrap SEs."""
    paths = report.input("values")
    if paths is None:
        return None
    values = {Path(f).stem: pd.read_csv(f) for f in paths}
    first = next(iter(values.values()))
    wide = first[["contributor", "name", "images"]].copy()
    for label, table in values.items():
        wide[label] = table["value"]
        wide[f"{label} SE"] = table["stderr"]
    prop = report.settings.get("prop", str(first["property"].iloc[0]))
    summary = f"{len(wide)} contributors; property {prop}; {_coalitions_used(report)}"
    if prop in PROPERTIES and PROPERTIES[prop].lower_is_better:
        summary += f" Lower {prop} is better, so values credit the negated {prop}: positive = helps."
    caption = "Contributor values per estimator and way of making coalition models, +-1 bootstrap SE"
    body = f"""<p>{html.escape(summary)}</p>
{report.figure(values_figure(values), "values", paths, caption)}
{report.table(wide, paths)}"""
    return Section("values", "Contributor values", body)


def _coalitions_used(report: Report) -> str:
    """Which coalitions the values were fitted on, from the run's shapley config."""
    shapley = report.config.get("shapley")
    if not shapley:
        return f"fit coalitions of {report.settings.get('estimator', 'the estimator')}."
    if ESTIMATORS[shapley["estimator"]].weighted and shapley.get("enumerate_sizes"):
        text = (
            "KernelSHAP on every contributor alone and every leave-one-out, enumerated and weighted by the "
            "Shapley kernel (no sampling, so no bootstrap SE)"
        )
    else:
        text = f"{shapley['num_coalitions']} fit coalitions drawn for {shapley['estimator']}"
    datamodel = shapley["datamodel"]
    if datamodel["num_coalitions"]:
        text += (
            f"; the ridge datamodel on its own {datamodel['num_coalitions']} random coalitions "
            f"(alpha {datamodel['alpha']})"
        )
    return text + "."


def shapley_lds_section(report: Report) -> Section | None:
    """Shapley LDS of every (estimator, way) on held-out coalitions."""
    path = report.input("shapley_lds")
    if path is None:
        return None
    lds = pd.read_csv(path)
    level = report.settings.get("level", 0.95)
    body = f"""<p>Spearman correlation, over held-out coalitions, between the summed values of the kept
contributors and the property of models retrained on them (mean over seeds); CI by bootstrap over
coalitions.</p>
{report.figure(shapley_lds_figure(lds, level), "shapley_lds", [path], "Shapley LDS per way and estimator")}
{report.table(lds, [path])}"""
    return Section("shapley-lds", "Shapley LDS", body)


def agreement_section(report: Report) -> Section | None:
    """Correlation of each way's values with the values from retraining."""
    path = report.input("agreement")
    if path is None:
        return None
    agreement = pd.read_csv(path)
    body = f"""<p>Pearson and Spearman correlation of each way's contributor values with those from
retraining (the gold standard), with bootstrap CIs over contributors.</p>
{report.table(agreement, [path])}"""
    beside = agreement_beside_published(agreement, report.config)
    if not beside.empty:
        body += f"""<h3>Beside the published values</h3>
<p>This run follows one of Lu et al.'s settings: our Pearson agreement of sparsified fine-tuning with
retraining beside theirs, which grows with the fine-tuning steps per coalition.</p>
{report.table(beside, [path, str(PUBLISHED)], decimals=2)}"""
    return Section("agreement", "Agreement with retraining", body)


def cost_section(report: Report) -> Section | None:
    """Seconds per coalition model and speed-ups against retraining, with the one-off pruning cost."""
    path = report.input("cost")
    if path is None:
        return None
    note = (
        "Per way, over the fit coalitions: mean steps and seconds of training / fine-tuning one coalition"
        " model; the one-off cost (the full model, plus pruning and its fine-tuning for sparse_ft); the"
        " total; the speed-ups against retraining per model and in total. Job start-up is not counted."
    )
    sources = [path]
    pruned = report.input("pruned")
    if pruned is not None:
        pruning = json.loads((Path(pruned) / "pruning.json").read_text())
        pr = pruning["pruning"]
        unit = "LoRA parameters" if pr.get("kind") == "lora_rank" else "channels"
        note += (
            f" Pruning removed {100 * pr['removed_fraction']:.0f}% of {unit} (requested"
            f" {100 * pr['ratio']:.0f}%), {pr['parameters_before']:,} -> {pr['parameters_after']:,}"
            f" parameters; fine-tuning the pruned model on all data took"
            f" {pruning['finetune_seconds']:.1f}s once."
        )
        sources.append(str(Path(pruned) / "pruning.json"))
    body = f"<p>{html.escape(note)}</p>\n{report.table(pd.read_csv(path), sources)}"
    return Section("cost", "Cost per coalition model", body)


def contributor_counterfactual_section(report: Report) -> Section | None:
    """The property after removing the top or bottom contributors by each way's values and retraining."""
    path = report.input("contributor_counterfactual")
    if path is None:
        return None
    table = pd.read_csv(path)
    caption = "Property of models retrained without the top / bottom contributors, against all contributors"
    body = f"""<p>Remove the top or the bottom fraction of contributors by each ranking, retrain and measure
again: removing the top-valued contributors should hurt more.</p>
{report.figure(contributor_counterfactual_figure(table), "contributor_counterfactual", [path], caption)}
{report.table(table, [path])}"""
    return Section("contributor-counterfactual", "Counterfactual: remove top or bottom contributors", body)


def planted_text(planted: pd.DataFrame) -> str:
    """The verdict, then one sentence per way: where its values rank the planted (corrupted) contributors,
    lowest first, and whether that passes (all of them at the bottom)."""
    failed = planted[~planted["passed"].astype(bool)]
    verdict = (
        f"The check FAILED for {len(failed)} of {len(planted)} values tables: "
        + ", ".join(f"{row.estimator} by {row.how}" for row in failed.itertuples())
        + " values do not put every planted contributor at the bottom."
        if len(failed)
        else f"The check passed for every values table ({len(planted)})."
    )
    return " ".join(
        [verdict]
        + [
            f"{row.estimator} values by {row.how} rank the planted contributors ({row.planted})"
            f" {row.ranks_from_bottom} from the bottom of {row.contributors};"
            f" precision at {row.k} of the bottom {row.precision_at_k:.2f}:"
            f" {'passed' if row.passed else 'failed'}."
            for row in planted.itertuples()
        ]
    )


def planted_section(report: Report) -> Section | None:
    """The planted-contributor check (left out when nothing was planted)."""
    path = report.input("planted")
    if path is None:
        return None
    planted = pd.read_csv(path)
    if planted.empty:
        return None
    body = f"""<p>These contributors' images were corrupted before training: a good valuation puts them at
the bottom (rank 1 = lowest value); the check passes when all of them are the lowest-valued.
{html.escape(planted_text(planted))}</p>
{report.table(planted, [path], decimals=3)}"""
    return Section("planted", "Planted low-quality contributors", body)
