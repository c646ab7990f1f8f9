"""The report's figures: matplotlib (Agg) at most 9.6 inches wide at 100 dpi, saved atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from diffattr.store import atomic_path  # noqa: E402

DPI = 100
MAX_WIDTH_IN = 9.6


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
    targets: np.ndarray,
    train: np.ndarray,
    scores: dict[str, np.ndarray],
    top: int = 4,
    max_columns: int = 13,
    label: str = "target",
    title: str = "Generated targets (left) and each method's top-scored training images",
) -> plt.Figure:
    """Per target: the target, then each method's `top` highest-scored training images; methods wrap onto
    further lines when more than `max_columns` images would share one. Rows are named `label` i."""

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
                axes[row, 0].set_ylabel(f"{label} {t}", fontsize=8)
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
    fig.suptitle(title, fontsize=9)
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
