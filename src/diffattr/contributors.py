"""Contributors: the owner of each training image (its class, a metadata column such as an artist, or a
random group), the players whose Shapley values the valuation branch estimates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffattr.errors import InputError


def assign_contributors(
    labels: np.ndarray, spec: dict, metadata: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Contributor id (0..n-1) of every image, and the contributors' names, from `shapley.contributors`.

    by = class: one contributor per class label; column: one per distinct value of a metadata column
    of an image-folder dataset; random: shuffled groups of `group_size` images (seeded).
    """
    by = spec["by"]
    if by == "class":
        classes, ids = np.unique(labels, return_inverse=True)
        return ids.astype(np.int64), [f"class {c}" for c in classes]
    if by == "column":
        column = spec.get("column")
        if not metadata or column not in metadata:
            available = sorted(metadata) if metadata else []
            raise InputError(
                f"config key 'shapley.contributors.column': {column!r} is not a metadata column of the "
                f"data (available: {available}; only the image_folder source has metadata)"
            )
        values = np.asarray(metadata[column]).astype(str)
        if (np.char.strip(values) == "").any():
            raise InputError(f"config key 'shapley.contributors.column': column {column!r} has empty cells")
        names, ids = np.unique(values, return_inverse=True)
        return ids.astype(np.int64), [str(n) for n in names]
    if by == "random":
        size = spec["group_size"]
        if size > len(labels):
            raise InputError(
                f"config key 'shapley.contributors.group_size': {size} is more than the {len(labels)} images"
            )
        order = np.random.default_rng(spec["seed"]).permutation(len(labels))
        ids = np.empty(len(labels), np.int64)
        ids[order] = np.arange(len(labels)) // size
        return ids, [f"group {g}" for g in range(ids.max() + 1)]
    raise InputError(f"config key 'shapley.contributors.by': unknown value {by!r}")


def contributor_table(ids: np.ndarray, names: list[str]) -> pd.DataFrame:
    """One row per contributor: id, name and number of images (the data/contributors.csv table)."""
    sizes = np.bincount(ids, minlength=len(names))
    return pd.DataFrame({"contributor": np.arange(len(names)), "name": names, "images": sizes})


def members(ids: np.ndarray, coalition: np.ndarray) -> np.ndarray:
    """Boolean mask of the images whose contributor is in the coalition (a boolean mask over contributors)."""
    return np.asarray(coalition, bool)[ids]
