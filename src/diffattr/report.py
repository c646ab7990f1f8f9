"""The experiment's report: one HTML page, `report/index.html`, with a section per result of the branches run.

How it is built: `build_report` calls every builder in `SECTIONS`, in order. A builder is a function
`builder(report: Report) -> Section | None`. It reads its inputs with `report.input(name)` (the report
rule's named inputs, from `report_inputs()` in rules/common.smk; None when the rule has no such input
because its branch is disabled or its stage is not in the DAG) and returns None when they are absent, so
the section is left out. It draws with `report.figure(fig, name, sources, caption)`, which saves
`report/figures/{name}.png` (a declared output of the rule, see below) and returns the HTML, and shows a
table with `report.table(frame, sources)` (every row, 3 decimals, linked to its CSV); both record which
input files the figure or table came from, for the provenance section.

To add a section (a few lines):

1. rules/common.smk, `report_inputs()`: add the named input when its stage is in the DAG, e.g.
   `inputs["dominating_norm"] = out("metrics/dominating_norm.csv")` under the condition that enables it.
   A figure the report draws itself: add `name: "input it needs"` to `REPORT_FIGURES` there, and a short
   caption `workflow/report/{name}.rst` (for `snakemake --report`). A figure another rule already wrote
   into `report/figures/` is shown with `report.existing_figure(name, sources, caption)`.
2. here: a builder, e.g.

       def dominating_norm_section(report: Report) -> Section | None:
           path = report.input("dominating_norm")
           if path is None:
               return None
           body = report.table(pd.read_csv(path), [path])
           return Section("dominating-norm", "Dominating norm", body)

3. insert it into `SECTIONS` where it should appear on the page.

Settings that are not files (method names, CI level, the benchmark folder, which rule belongs to which
branch) come from the rule's params as `report.settings[...]`. Figures are drawn at most 9.6 inches wide at
100 dpi (960 px), inside the page's content width at a 1280 px window, so their labels keep their size;
the page also caps every image at `max-width: 100%`, and table headers wrap so that tables fit.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from diffattr.errors import InputError  # noqa: E402
from diffattr.store import atomic_path, read_arrays, read_npz  # noqa: E402
from diffattr.timings import stage_timings  # noqa: E402

DPI = 100
MAX_WIDTH_IN = 9.6

STYLE = """*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;line-height:1.45;color:#222;max-width:72em;margin:0 auto;
  padding:1em 1.5em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
img{max-width:100%;height:auto}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555;overflow-wrap:anywhere}
.table-box{width:fit-content;max-width:100%;overflow-x:auto;border:1px solid #ddd;margin:.5em 0}
table{border-collapse:collapse;font-size:.85em}
th{background:#f2f2f2;white-space:normal;overflow-wrap:anywhere;vertical-align:bottom}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td{white-space:nowrap}
pre{max-height:30em;overflow:auto;background:#f7f7f7;padding:.5em;font-size:.85em}
code,li,p{overflow-wrap:anywhere}
nav ol{columns:3;font-size:.9em}
.facts th,.facts td{text-align:left}
.note{font-size:.85em;color:#555}"""


@dataclass
class Section:
    """One part of the page: its anchor id, its heading and its HTML body."""

    id: str
    title: str
    body: str


@dataclass
class Report:
    """What a section builder gets: the named inputs, the settings, and writers of figures and tables."""

    folder: Path
    inputs: dict[str, Any]
    settings: dict[str, Any]
    config: dict
    figures: set[str] | None = None
    provenance: list[tuple[str, list[str]]] = field(default_factory=list)

    def input(self, name: str) -> Any:
        """The named input (a path or a list of paths), or None when the rule has none of that name."""
        value = self.inputs.get(name)
        if value is None or (isinstance(value, list | tuple) and len(value) == 0) or value == "":
            return None
        return value

    def _link(self, path: str | Path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.folder.resolve())).as_posix()

    def figure(self, fig: plt.Figure, name: str, sources: list[str], caption: str) -> str:
        """Save `fig` as figures/{name}.png (a declared output) and return its <figure> element."""
        if self.figures is not None and name not in self.figures:
            plt.close(fig)
            raise InputError(
                f"report figure {name!r} is not a declared output (REPORT_FIGURES in rules/common.smk)"
            )
        save_figure(fig, self.folder / "figures" / f"{name}.png")
        return self.existing_figure(name, sources, caption)

    def existing_figure(self, name: str, sources: list[str], caption: str) -> str:
        """The <figure> element of figures/{name}.png, drawn by this or another rule from `sources`."""
        self.provenance.append((f"figures/{name}.png", [str(s) for s in sources]))
        return (
            f'<figure><img src="figures/{name}.png" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def table(self, frame: pd.DataFrame, sources: list[str], decimals: int = 3) -> str:
        """`frame` as an HTML table, every row shown and numbers at `decimals` places, with links to the
        files it came from."""
        self.provenance.append(
            (f"table from {', '.join(Path(s).name for s in sources)}", [str(s) for s in sources])
        )
        body = frame.to_html(index=False, float_format=lambda v: f"{v:.{decimals}f}", border=0, na_rep="")
        links = ", ".join(
            f'<a href="{html.escape(self._link(s))}">{html.escape(Path(s).name)}</a>' for s in sources
        )
        return f'<div class="table-box">{body}</div><p class="note">from {links}</p>'


Builder = Callable[[Report], "Section | None"]


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = DPI) -> None:
    """Write a figure as PNG atomically (no half-written image is left by a killed job) and close it."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def grouped_bars(
    ax: plt.Axes, categories: list[str], series: dict[str, tuple[np.ndarray, np.ndarray]], horizontal: bool
) -> None:
    """Bars of each series' values with error bars (2 x n or n) per category; horizontal lists the
    categories top to bottom, so that many or long labels stay legible."""
    width = 0.8 / len(series)
    pos = np.arange(len(categories))
    for i, (label, (value, err)) in enumerate(series.items()):
        at = pos + (i - (len(series) - 1) / 2) * width
        # a percentile CI may exclude its point estimate, and a constant property has none: no whisker
        err = np.clip(np.nan_to_num(np.asarray(err, dtype=float)), 0, None)
        if horizontal:
            ax.barh(at, value, width, xerr=err, capsize=2, label=label)
        else:
            ax.bar(at, value, width, yerr=err, capsize=3, label=label)
    if horizontal:
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(pos, categories)
        ax.set_ylim(len(categories) - 0.5, -0.5)
    else:
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(pos, categories)


def figure_legend(fig: plt.Figure, ax: plt.Axes) -> None:
    """One legend above the plot (outside it, so that it hides no bar); needs a constrained layout."""
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > 1:
        fig.legend(
            handles, labels, loc="outside upper center", ncols=min(4, len(handles)), frameon=False, fontsize=8
        )


def _ci_error(frame: pd.DataFrame, value: str, prefix: str = "") -> np.ndarray:
    """Error bars (2 x n) from `value` to the columns {prefix}ci_low and {prefix}ci_high."""
    return np.vstack([frame[value] - frame[f"{prefix}ci_low"], frame[f"{prefix}ci_high"] - frame[value]])


def lds_figure(lds: pd.DataFrame) -> plt.Figure:
    """Bars of LDS per method, one per target split, with their CIs over subsets (the papers' interval;
    horizontal above 6 methods)."""
    methods = list(dict.fromkeys(lds["method"]))
    splits = list(dict.fromkeys(lds["split"]))
    series = {}
    for split in splits:
        part = lds[lds["split"] == split].set_index("method").reindex(methods)
        series[f"{split} targets"] = (part["lds"].to_numpy(), _ci_error(part, "lds", "subsets_"))
    horizontal = len(methods) > 6
    if horizontal:
        fig, ax = plt.subplots(figsize=(7.5, 1.4 + 0.3 * len(methods) * len(splits)), layout="constrained")
        ax.set_xlabel("LDS (Spearman)")
    else:
        fig, ax = plt.subplots(
            figsize=(min(MAX_WIDTH_IN, 2.6 + 1.1 * len(methods)), 3.8), layout="constrained"
        )
        ax.set_ylabel("LDS (Spearman)")
    grouped_bars(ax, methods, series, horizontal)
    figure_legend(fig, ax)
    return fig


def dominating_norm_figure(table: pd.DataFrame) -> plt.Figure:
    """Per method and target split: the share of distinct top-k training images, and the share of targets
    whose top-k holds the most frequent one (the dominating-norm diagnostic)."""
    methods = list(dict.fromkeys(table["method"]))
    splits = list(dict.fromkeys(table["split"]))
    height = 1.4 + 0.3 * len(methods) * len(splits)
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH_IN, height), layout="constrained", sharey=True)
    for ax, column, label in [
        (axes[0], "distinct_share", "distinct top-k images / maximum possible"),
        (axes[1], "most_frequent_share", "targets whose top-k holds the most frequent image"),
    ]:
        series = {}
        for split in splits:
            part = table[table["split"] == split].set_index("method").reindex(methods)
            series[f"{split} targets"] = (part[column].to_numpy(), np.zeros(len(methods)))
        grouped_bars(ax, methods, series, horizontal=True)
        ax.set_xlim(0, 1)
        ax.set_xlabel(label)
    figure_legend(fig, axes[0])
    return fig


def top_attributions_figure(
    targets: np.ndarray, train: np.ndarray, scores: dict[str, np.ndarray], top: int = 4, max_columns: int = 13
) -> plt.Figure:
    """Per target: the target, then each method's `top` highest-scored training images; methods wrap onto
    further lines when more than `max_columns` images would share one."""

    def show(ax: plt.Axes, image: np.ndarray | None) -> None:
        ax.set_xticks([])
        ax.set_yticks([])
        if image is None:
            ax.axis("off")
        else:
            ax.imshow(image.transpose(1, 2, 0).squeeze(), cmap="gray", vmin=0, vmax=255)

    methods = list(scores)
    per_line = max(1, (max_columns - 1) // top)
    lines = -(-len(methods) // per_line)
    cols = 1 + min(per_line, len(methods)) * top
    rows = len(targets) * lines
    cell = min(0.8, MAX_WIDTH_IN / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, (cell + 0.15) * rows + 0.4), squeeze=False)
    for t, target in enumerate(targets):
        for line in range(lines):
            row = t * lines + line
            show(axes[row, 0], target if line == 0 else None)
            if line == 0:
                axes[row, 0].set_ylabel(f"target {t}", fontsize=8)
            for slot in range(min(per_line, len(methods))):
                m = line * per_line + slot
                for rank in range(top):
                    ax = axes[row, 1 + slot * top + rank]
                    if m >= len(methods):
                        show(ax, None)
                        continue
                    show(ax, train[np.argsort(-scores[methods[m]][t])[rank]])
                    if rank == 0:
                        ax.set_title(methods[m], fontsize=8, loc="left", pad=2)
    fig.suptitle("Generated targets (left) and each method's top-scored training images", fontsize=9)
    return fig


def values_figure(values: dict[str, pd.DataFrame], shown: int = 40) -> plt.Figure:
    """Horizontal bars of every contributor's value, +-1 standard error: a panel per estimator, a bar per
    way of making coalition models (labels `estimator-how`); above `shown` contributors, the top and
    bottom shown/2 by the first table's values."""
    first = next(iter(values.values()))
    if len(first) > shown:
        order = first["value"].to_numpy().argsort()
        keep = np.sort(np.concatenate([order[: shown // 2], order[-(shown // 2) :]]))
        values = {label: table.iloc[keep] for label, table in values.items()}
    names = [str(n) for n in next(iter(values.values()))["name"]]
    panels: dict[str, dict[str, pd.DataFrame]] = {}
    for label, table in values.items():
        estimator, _, how = label.partition("-")
        panels.setdefault(estimator, {})[how or label] = table
    ways = max(len(p) for p in panels.values())
    cols = min(2, len(panels))
    grid = -(-len(panels) // cols)
    height = 1.0 + len(names) * (0.12 + 0.12 * ways)
    fig, axes = plt.subplots(
        grid,
        cols,
        figsize=(MAX_WIDTH_IN if cols > 1 else 7.0, grid * height + 0.3),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    prop = first["property"].iloc[0] if "property" in first else "property"
    for ax, (estimator, tables) in zip(axes.flat, panels.items(), strict=False):
        series = {how: (t["value"].to_numpy(), t["stderr"].to_numpy()) for how, t in tables.items()}
        grouped_bars(ax, names, series, horizontal=True)
        ax.set_title(f"{estimator}: value ({prop}), +-1 SE", fontsize=10)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure_legend(fig, axes[0, 0])
    return fig


def shapley_lds_figure(lds: pd.DataFrame, level: float) -> plt.Figure:
    """Bars of the Shapley LDS per way of making coalition models, one per estimator, with their CIs."""
    hows = list(dict.fromkeys(lds["how"]))
    series = {}
    for estimator in dict.fromkeys(lds["estimator"]):
        part = lds[lds["estimator"] == estimator].set_index("how").reindex(hows)
        series[estimator] = (part["lds"].to_numpy(), _ci_error(part, "lds"))
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH_IN, 3.2 + 1.2 * len(hows)), 3.6), layout="constrained")
    grouped_bars(ax, hows, series, horizontal=False)
    figure_legend(fig, ax)
    ax.set_ylabel(f"Shapley LDS (Spearman), {100 * level:.0f}% CI")
    return fig


def contributor_counterfactual_figure(counterfactual: pd.DataFrame) -> plt.Figure:
    """The property after retraining without the top / bottom contributors of each ranking, +-1 SE, with
    the full model's as a line."""
    rankings = list(dict.fromkeys(counterfactual["ranked_by"]))
    series = {}
    for side in dict.fromkeys(counterfactual["removed"]):
        part = counterfactual[counterfactual["removed"] == side].set_index("ranked_by").reindex(rankings)
        series[f"{side} removed"] = (part["value"].to_numpy(), np.nan_to_num(part["stderr"].to_numpy()))
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH_IN, 3.6 + 1.4 * len(rankings)), 3.6), layout="constrained")
    grouped_bars(ax, rankings, series, horizontal=False)
    ax.axhline(
        counterfactual["full"].iloc[0], color="grey", linestyle="--", linewidth=1, label="all contributors"
    )
    figure_legend(fig, ax)
    ax.set_ylabel(str(counterfactual["property"].iloc[0]))
    return fig


def lds_section(report: Report) -> Section | None:
    """LDS of every method on validation and generated targets: bars with CIs and the table."""
    path = report.input("lds")
    if path is None:
        return None
    lds = pd.read_csv(path)
    level = f"{100 * report.settings.get('level', 0.95):.0f}%"
    caption = f"LDS per method and target split, {level} bootstrap CI over subsets"
    body = f"""<p>Spearman correlation, over the LDS subsets, between the summed attribution scores of a
subset and the measured loss (negated) of the models retrained on it, averaged over the targets not used
to choose the damping (column <code>lambda</code>: the damping chosen). Two {level} bootstrap CIs of that
mean: <code>subsets_ci_low</code>/<code>_high</code> resample the subsets (the papers' interval, BCa as in
D-TRAK; the error bars) and <code>targets_ci_low</code>/<code>_high</code> resample the targets
(percentile).</p>
{report.figure(lds_figure(lds), "lds", [path], caption)}
{report.table(lds, [path], decimals=3)}"""
    return Section("lds", "Linear datamodeling score", body)


def top_attributions_section(report: Report) -> Section | None:
    """A few reported generated targets with each method's top-scored training images."""
    scores_paths = report.input("gen_scores")
    if scores_paths is None:
        return None
    methods = report.settings["methods"]
    shown = np.flatnonzero(~read_npz(report.input("subsets"))["heldout_gen"])[: report.settings["examples"]]
    scores = {
        method: read_arrays(path, ["scores"])["scores"][shown]
        for method, path in zip(methods, scores_paths, strict=True)
    }
    targets = read_arrays(report.input("samples"), ["images"])["images"][shown]
    train = read_arrays(report.input("train"), ["images"])["images"]
    sources = [*scores_paths, report.input("samples"), report.input("train"), report.input("subsets")]
    caption = (
        f"The first {len(shown)} reported generated targets and the top-scored training images of each method"
    )
    body = report.figure(
        top_attributions_figure(targets, train, scores), "top_attributions", sources, caption
    )
    return Section("top-attributions", "Top-attributed training images", body)


def dominating_norm_section(report: Report) -> Section | None:
    """The dominating-norm diagnostic: do a few training images top most targets' lists?"""
    path = report.input("dominating_norm")
    if path is None:
        return None
    table = pd.read_csv(path)
    caption = "Distinct training images in the reported targets' top-k, and the most frequent one's share"
    body = f"""<p>For each method and target split, over the reported targets: how many distinct training
images appear in their top-{int(table["k"].iloc[0])} (as a share of the most possible), and which image
appears most often, with the share of targets whose top-k holds it. A few large-gradient-norm images at the
top of every list (the "dominating norm" effect that ReTrac corrects) show as a low distinct share and a
high most-frequent share.</p>
{report.figure(dominating_norm_figure(table), "dominating_norm", [path], caption)}
{report.table(table, [path], decimals=3)}"""
    return Section("dominating-norm", "Dominating norm: the same training images for every target?", body)


def counterfactual_section(report: Report) -> Section | None:
    """D-TRAK's counterfactual: how far each target moves when its top-scored training images are removed."""
    summary_path = report.input("counterfactual_summary")
    if summary_path is None:
        return None
    per_target = report.input("counterfactual")
    summary = pd.read_csv(summary_path)
    caption = "Each target (row) regenerated by models retrained without each method's top images"
    body = f"""<p>For each of a few generated targets, the training images a method scores highest (or as many
at random) are removed, a model is retrained from the same seed, and the target is regenerated from its own
seed. A larger pixel L2 distance (on [-1, 1] images) or a lower CLIP cosine than the random removal means
the method found images that mattered to this output. Mean over targets with bootstrap CIs.</p>
{report.table(summary, [summary_path], decimals=3)}
{report.existing_figure("counterfactual", [summary_path, per_target], caption)}"""
    return Section("counterfactual", "Counterfactual: remove each target's top-scored images", body)


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
    if prop in ("fid", "kid"):
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
    if shapley["estimator"] == "kernelshap" and shapley.get("enumerate_sizes"):
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
    body = f"""<p>Pearson and Spearman correlation of each way's contributor values with those from
retraining (the gold standard), with bootstrap CIs over contributors.</p>
{report.table(pd.read_csv(path), [path])}"""
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


def branch_timings(benchmarks: str | Path, branches: dict[str, str]) -> dict[str, pd.DataFrame]:
    """Stage timings (diffattr.timings) split by branch: `branches` maps a stage (a benchmark folder) to
    its branch; stages it does not name (the report's own) are left out, and without any mapping every
    stage is in one table "all stages". Each table ends with a total row."""
    table = stage_timings(benchmarks)
    grouped = {}
    branch_of = table["stage"].map(lambda s: branches.get(s) if branches else "all stages")
    for branch in dict.fromkeys([*branches.values()] or ["all stages"]):
        part = table[branch_of == branch]
        if part.empty:
            continue
        total = {
            "stage": "total",
            "jobs": part["jobs"].sum(),
            "total_s": round(part["total_s"].sum(), 1),
            "longest_s": part["longest_s"].max(),
            "peak_rss_mb": part["peak_rss_mb"].max(),
        }
        grouped[branch] = pd.concat([part, pd.DataFrame([total])], ignore_index=True)
    return grouped


def timings_section(report: Report) -> Section | None:
    """Job time per stage from the benchmark files, one table per branch."""
    benchmarks = report.settings.get("benchmarks")
    if benchmarks is None or not Path(benchmarks).is_dir():
        return None
    tables = branch_timings(benchmarks, report.settings.get("branches", {}))
    if not tables:
        return None
    parts = [
        "<p>Seconds of job time per stage (summed over its jobs, from Snakemake's benchmark files), the"
        " longest job and the peak memory; wall time is less when jobs run in parallel. This report's own"
        " job is not counted.</p>"
    ]
    for branch, table in tables.items():
        parts.append(f"<h3>{html.escape(branch)}</h3>\n{report.table(table, [str(benchmarks)], decimals=1)}")
    return Section("timings", "Stage timings", "\n".join(parts))


def git_commit(folder: str | Path) -> str:
    """The commit of the git checkout holding `folder`, marked when it has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes)" if dirty else head


def config_hash(config: dict) -> str:
    """A short SHA-256 of the config as canonical JSON: equal hashes, equal configs."""
    canonical = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def provenance_section(report: Report) -> Section:
    """Git commit, config hash, which files each figure and table came from, and the config itself."""
    source = report.settings.get("source")
    rows = [
        ("experiment", report.config.get("experiment", "")),
        ("git commit", git_commit(source) if source else "unknown"),
        ("config hash (SHA-256 of the canonical JSON)", config_hash(report.config)),
    ]
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    made = "".join(
        f"<li><strong>{html.escape(what)}</strong>: "
        + ", ".join(f"<code>{html.escape(s)}</code>" for s in sources)
        + "</li>"
        for what, sources in report.provenance
    )
    inputs = sorted(
        {
            str(v)
            for value in report.inputs.values()
            for v in (value if isinstance(value, list | tuple) else [value])
        }
    )
    listed = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in inputs)
    body = f"""<div class="table-box"><table class="facts">{facts}</table></div>
<h3>Where each figure and table came from</h3>
<ul>{made}</ul>
<h3>Every input of this report</h3>
<div class="table-box"><ul>{listed}</ul></div>
<h3>Config</h3>
<pre>{html.escape(yaml.safe_dump(report.config, sort_keys=False))}</pre>"""
    return Section("provenance", "Config and provenance", body)


SECTIONS: list[Builder] = [
    lds_section,
    top_attributions_section,
    dominating_norm_section,
    counterfactual_section,
    values_section,
    shapley_lds_section,
    agreement_section,
    cost_section,
    contributor_counterfactual_section,
    planted_section,
    timings_section,
]


def write_page(path: str | Path, title: str, sections: list[Section]) -> None:
    """An HTML page with a table of contents and the sections, written atomically."""
    contents = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "\n".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>\n{s.body}\n</section>' for s in sections
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<nav><ol>{contents}</ol></nav>
{body}
</body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page)


def build_report(
    path: str | Path,
    inputs: dict[str, Any],
    settings: dict[str, Any],
    config: dict,
    figures: list[str] | None = None,
    sections: list[Builder] | None = None,
) -> list[str]:
    """Write index.html at `path` (figures under figures/ beside it) from every section whose inputs are
    there, then config and provenance; `figures` are the declared figure names (None: any). Returns the
    titles of the sections shown."""
    report = Report(
        Path(path).parent,
        dict(inputs),
        dict(settings),
        dict(config),
        set(figures) if figures is not None else None,
    )
    shown = [
        s for builder in (SECTIONS if sections is None else sections) if (s := builder(report)) is not None
    ]
    if report.figures is not None:
        missing = report.figures - {Path(p).stem for p, _ in report.provenance if p.startswith("figures/")}
        if missing:
            raise InputError(
                f"report figures declared but not drawn (their inputs are missing): {sorted(missing)}"
            )
    shown.append(provenance_section(report))
    write_page(path, f"diffattr report: {config.get('experiment', '')}", shown)
    return [s.title for s in shown]
