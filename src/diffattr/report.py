"""The report: an HTML page with the LDS bar chart, the tables, and where every number came from."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from diffattr.store import atomic_path  # noqa: E402


def write_page(path: str | Path, title: str, body: str, config: dict, sources: list[str]) -> None:
    """An HTML report page: `body`, then the files it was produced from and the config, written atomically."""
    produced = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in sources)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head><body>
{body}<h2>Produced from</h2>
<ul>{produced}</ul>
<h2>Config</h2>
<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>
</body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page)


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> None:
    """Write a figure as PNG atomically (no half-written image is left by a killed job) and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def lds_figure(lds: pd.DataFrame, path: str | Path) -> None:
    """Grouped bars of LDS per method and target split with their CIs."""
    methods = list(dict.fromkeys(lds["method"]))
    splits = list(dict.fromkeys(lds["split"]))
    width = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(methods), 3.6))
    for i, split in enumerate(splits):
        part = lds[lds["split"] == split].set_index("method").reindex(methods)
        x = np.arange(len(methods)) + (i - (len(splits) - 1) / 2) * width
        err = np.vstack([part["lds"] - part["ci_low"], part["ci_high"] - part["lds"]])
        ax.bar(x, part["lds"], width, yerr=err, capsize=3, label=f"{split} targets")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(methods)), methods)
    ax.set_ylabel("LDS (Spearman)")
    ax.set_title("Linear datamodeling score, 95% bootstrap CI")
    ax.legend(frameon=False)
    save_figure(fig, path)


def top_attributions_figure(
    targets: np.ndarray, train: np.ndarray, scores: dict[str, np.ndarray], path: str | Path, top: int = 4
) -> None:
    """For each target (row): the target, then each method's `top` highest-scored training images."""

    def show(ax, image: np.ndarray) -> None:
        ax.imshow(image.transpose(1, 2, 0).squeeze(), cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])

    methods = list(scores)
    cols = 1 + len(methods) * top
    fig, axes = plt.subplots(
        len(targets), cols, figsize=(0.9 * cols, 0.95 * len(targets) + 0.4), squeeze=False
    )
    for row, target in enumerate(targets):
        show(axes[row, 0], target)
        for m, method in enumerate(methods):
            for rank, index in enumerate(np.argsort(-scores[method][row])[:top]):
                ax = axes[row, 1 + m * top + rank]
                show(ax, train[index])
                if row == 0 and rank == 0:
                    ax.set_title(method, fontsize=8, loc="left")
    axes[0, 0].set_title("target", fontsize=8)
    fig.suptitle("Generated targets and their top-scored training images", fontsize=9)
    save_figure(fig, path, dpi=100)


def write_report(
    path: str | Path,
    figures: list[str | Path],
    lds: pd.DataFrame,
    timings: pd.DataFrame,
    config: dict,
    sources: list[str],
) -> None:
    """index.html beside figures/: LDS chart and table, top attributions, timings, config, inputs."""
    rel_figure, rel_top = (Path(f).relative_to(Path(path).parent) for f in figures)
    body = f"""<h1>diffattr report: {html.escape(config["experiment"])}</h1>
<h2>Linear datamodeling score</h2>
<p>Spearman correlation, over the LDS subsets, between the summed attribution scores of a subset and the
measured loss (negated) of the models retrained on it; averaged over targets not used to choose the
damping; CI by bootstrap over targets.</p>
<img src="{rel_figure}" alt="LDS bar chart">
{lds.to_html(index=False, float_format=lambda v: f"{v:.3f}")}
<h2>What the methods attribute</h2>
<img src="{rel_top}" alt="generated targets with their top-scored training images">
<h2>Stage timings</h2>
{timings.to_html(index=False)}
"""
    write_page(path, f"diffattr: {config['experiment']}", body, config, sources)


def values_figure(values: dict[str, pd.DataFrame], path: str | Path, shown: int = 40) -> None:
    """Grouped bars of each contributor's value per way (estimator-how), with +-1 standard error; with
    more than `shown` contributors, the top and bottom shown/2 by the first table's values."""
    first = next(iter(values.values()))
    if len(first) > shown:
        order = first["value"].to_numpy().argsort()
        keep = np.sort(np.concatenate([order[: shown // 2], order[-(shown // 2) :]]))
        values = {label: table.iloc[keep] for label, table in values.items()}
    names = list(next(iter(values.values()))["name"])
    width = 0.8 / len(values)
    fig, ax = plt.subplots(figsize=(2 + 0.55 * len(names) * max(1, len(values) / 2), 3.8))
    for i, (label, table) in enumerate(values.items()):
        x = np.arange(len(names)) + (i - (len(values) - 1) / 2) * width
        ax.bar(x, table["value"], width, yerr=table["stderr"], capsize=2, label=label)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel(f"value ({next(iter(values.values()))['property'].iloc[0]})")
    ax.set_title("Contributor values, +-1 bootstrap SE")
    ax.legend(frameon=False, fontsize=8)
    save_figure(fig, path)


def shapley_lds_figure(lds: pd.DataFrame, path: str | Path, level: float) -> None:
    """Bars of the Shapley LDS of every (estimator, way) with its CI."""
    labels = [f"{e}\n{h}" for e, h in zip(lds["estimator"], lds["how"], strict=True)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(lds), 3.4))
    err = np.vstack([lds["lds"] - lds["ci_low"], lds["ci_high"] - lds["lds"]])
    ax.bar(np.arange(len(lds)), lds["lds"], 0.6, yerr=err, capsize=3)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(lds)), labels)
    ax.set_ylabel("Shapley LDS (Spearman)")
    ax.set_title(f"Held-out coalitions, {100 * level:.0f}% bootstrap CI")
    save_figure(fig, path)


def write_shapley_report(
    path: str | Path,
    figures: list[str | Path],
    tables: dict[str, pd.DataFrame],
    notes: dict[str, str],
    config: dict,
    sources: list[str],
) -> None:
    """index.html of the contributor branch: values, Shapley LDS, agreement, cost, counterfactuals."""
    rel = [Path(f).relative_to(Path(path).parent) for f in figures]

    def table(name: str) -> str:
        return tables[name].to_html(index=False, float_format=lambda v: f"{v:.4g}")

    body = f"""<h1>Contributor values: {html.escape(config["experiment"])}</h1>
<p>{html.escape(notes["summary"])}</p>
<h2>Values</h2>
<img src="{rel[0]}" alt="contributor values">
{table("values")}
<h2>Shapley LDS</h2>
<p>Spearman correlation, over held-out coalitions, between the summed values of the kept contributors and
the property of models retrained on them (mean over seeds); CI by bootstrap over coalitions.</p>
<img src="{rel[1]}" alt="Shapley LDS">
{table("lds")}
<h2>Agreement with retraining</h2>
{table("agreement")}
<h2>Cost per coalition model</h2>
<p>{html.escape(notes["cost"])}</p>
{table("cost")}
<h2>Counterfactual: remove the top or bottom contributors and retrain</h2>
{table("counterfactual")}
"""
    write_page(path, f"diffattr contributors: {config['experiment']}", body, config, sources)
