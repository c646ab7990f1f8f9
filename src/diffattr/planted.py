"""Planted low-quality contributors: corrupt the images of chosen contributors, so that a valuation can
be checked against a known answer (those contributors should get the lowest values)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffattr.errors import InputError

CORRUPTIONS = ("noise", "shuffle")


def corrupt_images(images: np.ndarray, corruption: str, seed: int) -> np.ndarray:
    """Corrupted copies of uint8 images (N, C, H, W).

    noise: add Gaussian noise of standard deviation the whole pixel range (2.0 on the [-1, 1] scale)
    and clip; shuffle: permute each image's pixel positions at random (the same permutation for every
    channel), which keeps its intensities and destroys its shape.
    """
    rng = np.random.default_rng(seed)
    if corruption == "noise":
        noisy = images.astype(np.float64) + rng.normal(0.0, 255.0, images.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if corruption == "shuffle":
        n, c, h, w = images.shape
        flat = images.reshape(n, c, h * w)
        order = np.argsort(rng.random((n, h * w)), axis=1)
        return np.take_along_axis(flat, order[:, None, :], axis=2).reshape(images.shape).copy()
    raise InputError(
        f"config key 'shapley.contributors.planted.corruption': unknown {corruption!r} "
        f"(known: {list(CORRUPTIONS)})"
    )


def plant(
    images: np.ndarray, ids: np.ndarray, spec: dict, num_contributors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images with the planted contributors' images corrupted, and the boolean planted mask over contributors.

    `spec` is `shapley.contributors.planted` ({ids, corruption, seed}); ids are contributor ids (rows of
    contributors.csv).
    """
    planted = np.zeros(num_contributors, bool)
    chosen = list(spec.get("ids") or [])
    bad = [i for i in chosen if not 0 <= i < num_contributors]
    if bad:
        raise InputError(
            f"config key 'shapley.contributors.planted.ids': {bad} are not contributor ids "
            f"(0..{num_contributors - 1})"
        )
    if len(chosen) >= num_contributors:
        raise InputError(
            "config key 'shapley.contributors.planted.ids': at least one contributor must stay clean"
        )
    planted[chosen] = True
    out = images.copy()
    hit = planted[ids]
    if hit.any():
        out[hit] = corrupt_images(images[hit], spec["corruption"], spec["seed"])
    return out, planted


def planted_ranks(values: np.ndarray, planted: np.ndarray) -> dict:
    """Where the planted contributors fall when contributors are ranked by value, lowest first.

    ranks: 1-based rank of each planted contributor (1 = lowest value; ties broken by id);
    precision: share of the k lowest-valued contributors that are planted (k = number planted).
    """
    k = int(planted.sum())
    order = np.argsort(values, kind="stable")
    rank = np.empty(len(values), np.int64)
    rank[order] = np.arange(1, len(values) + 1)
    return {
        "k": k,
        "ranks": rank[planted].tolist(),
        "precision": float(planted[order[:k]].mean()) if k else float("nan"),
    }


def planted_table(values: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per values table (estimator-way): the planted contributors' ranks and precision at k, and
    whether the check passed (every planted contributor among the k lowest values)."""
    rows = []
    for label, table in values.items():
        planted = table["planted"].to_numpy(bool)
        if not planted.any():
            continue
        result = planted_ranks(table["value"].to_numpy(), planted)
        estimator, how = label.split("-", 1)
        rows.append(
            {
                "estimator": estimator,
                "how": how,
                "contributors": len(table),
                "planted": ", ".join(table["name"][planted].astype(str)),
                "ranks_from_bottom": ", ".join(map(str, result["ranks"])),
                "k": result["k"],
                "precision_at_k": result["precision"],
                "passed": result["precision"] == 1.0,
            }
        )
    columns = [
        "estimator",
        "how",
        "contributors",
        "planted",
        "ranks_from_bottom",
        "k",
        "precision_at_k",
        "passed",
    ]
    return pd.DataFrame(rows, columns=columns)
