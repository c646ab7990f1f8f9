"""Random training subsets for the linear datamodeling score, and the held-out targets used for tuning."""

from __future__ import annotations

import numpy as np


def lds_subsets(
    labels: np.ndarray, num_subsets: int, alpha: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (num_subsets, N), each keeping a fraction `alpha` of every class; and their seeds."""
    seeds = np.random.SeedSequence(seed).generate_state(num_subsets).astype(np.int64)
    masks = np.zeros((num_subsets, len(labels)), dtype=bool)
    for m, subset_seed in enumerate(seeds):
        rng = np.random.default_rng(subset_seed)
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            keep = int(round(alpha * len(members)))
            masks[m, rng.choice(members, size=keep, replace=False)] = True
    return masks, seeds


def heldout_targets(n_targets: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the targets reserved for choosing hyperparameters; the LDS is reported on the rest."""
    n_heldout = int(round(fraction * n_targets))
    mask = np.zeros(n_targets, dtype=bool)
    mask[np.random.default_rng(seed).choice(n_targets, size=n_heldout, replace=False)] = True
    return mask
