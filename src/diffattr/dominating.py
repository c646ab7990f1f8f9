"""The dominating-norm diagnostic (Xie et al., TMLR 2024): do a few training images top every list?"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from diffattr.errors import InputError


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices (T, k) of each target's k highest-scored training images."""
    if not 1 <= k <= scores.shape[1]:
        raise InputError(
            f"config key 'evaluate.top_k': {k} is not between 1 and the {scores.shape[1]} training images"
        )
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def dominating_norm(scores: np.ndarray, k: int) -> dict:
    """Distinct training images in the targets' top-k, and the one that appears for most targets.

    `distinct_share` is the distinct count over its maximum min(N, T k): 1 when no two targets share
    a top-k image; `most_frequent_share` is the fraction of targets whose top-k holds the most frequent one.
    """
    top = top_k(scores, k)
    counts = np.bincount(top.ravel(), minlength=scores.shape[1])
    distinct = int((counts > 0).sum())
    most = int(np.argmax(counts))
    return {
        "k": k,
        "n_targets": int(len(scores)),
        "distinct": distinct,
        "distinct_share": distinct / min(scores.shape[1], len(scores) * k),
        "most_frequent": most,
        "most_frequent_share": float(counts[most] / len(scores)),
    }


def dominating_norm_figure(table: pd.DataFrame, path: str | Path) -> None:
    """Two bar charts per method and split: share of distinct top-k images, share of the most frequent one."""
    from diffattr.report import plt, save_figure

    methods = list(dict.fromkeys(table["method"]))
    splits = list(dict.fromkeys(table["split"]))
    x = np.arange(len(methods))
    width = 0.8 / len(splits)
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.1 * len(methods)) * 1.6, 3.6))
    for ax, column, title in [
        (axes[0], "distinct_share", "distinct top-k images / max possible"),
        (axes[1], "most_frequent_share", "targets whose top-k holds the most frequent image"),
    ]:
        for s, split in enumerate(splits):
            rows = table[table["split"] == split].set_index("method").reindex(methods)
            ax.bar(x + (s - (len(splits) - 1) / 2) * width, rows[column], width, label=split)
        ax.set_xticks(x, methods, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
    axes[0].legend()
    save_figure(fig, path)
