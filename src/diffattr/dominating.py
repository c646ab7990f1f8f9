"""The dominating-norm diagnostic (Xie et al., TMLR 2024): do a few training images top every list?"""

from __future__ import annotations

import numpy as np

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
