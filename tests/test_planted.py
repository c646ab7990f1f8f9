"""Planted low-quality contributors: the corruption hits exactly their images, and the rank check is right
on values whose order is known."""

import numpy as np
import pandas as pd
import pytest

from diffattr.errors import InputError
from diffattr.planted import corrupt_images, plant, planted_ranks, planted_table


def test_plant_corrupts_only_the_planted_contributors_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 1, 4, 4)).astype(np.uint8)
    ids = np.repeat(np.arange(4), 3)
    out, planted = plant(images, ids, {"ids": [1, 3], "corruption": "noise", "seed": 0}, 4)
    assert planted.tolist() == [False, True, False, True]
    hit = np.isin(ids, [1, 3])
    np.testing.assert_array_equal(out[~hit], images[~hit])
    assert (out[hit] != images[hit]).mean() > 0.8
    assert out.dtype == np.uint8


def test_shuffle_keeps_each_images_pixels_and_moves_them():
    images = np.arange(2 * 3 * 16, dtype=np.uint8).reshape(2, 3, 4, 4)
    out = corrupt_images(images, "shuffle", 1)
    for a, b in zip(images, out, strict=True):
        assert sorted(a[0].ravel()) == sorted(b[0].ravel())
        assert not np.array_equal(a, b)
        # the same permutation for every channel: channel c is channel 0 shifted by 16 c
        np.testing.assert_array_equal(b[1], b[0] + 16)


def test_bad_planted_ids_name_the_key():
    images = np.zeros((4, 1, 2, 2), np.uint8)
    with pytest.raises(InputError, match="planted.ids"):
        plant(images, np.arange(4), {"ids": [7], "corruption": "noise", "seed": 0}, 4)
    with pytest.raises(InputError, match="planted.ids"):
        plant(images, np.arange(4), {"ids": [0, 1, 2, 3], "corruption": "noise", "seed": 0}, 4)


def test_ranks_and_precision_against_a_hand_count():
    values = np.array([0.5, -1.0, 0.2, 0.1, -0.3])
    planted = np.array([False, True, False, True, False])
    # order from the bottom: 1 (-1.0), 4 (-0.3), 3 (0.1), 2, 0
    result = planted_ranks(values, planted)
    assert result == {"k": 2, "ranks": [1, 3], "precision": 0.5}
    table = pd.DataFrame(
        {"name": list("abcde"), "value": values, "planted": planted, "contributor": range(5)}
    )
    row = planted_table({"kernelshap-sparse_ft": table}).iloc[0]
    assert (row.estimator, row.how, row.planted, row.ranks_from_bottom) == (
        "kernelshap",
        "sparse_ft",
        "b, d",
        "1, 3",
    )
    assert row.precision_at_k == 0.5
    assert planted_table({"kernelshap-retrain": table.assign(planted=False)}).empty
