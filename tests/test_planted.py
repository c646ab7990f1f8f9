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


def test_the_report_says_the_check_failed_when_a_game_values_the_planted_contributors_highly(tmp_path):
    """Two games over 6 contributors with 4 and 5 planted, their exact Shapley values through planted.csv
    into the report: where the planted ones lower the property the check passes; where they raise it (a
    valuation that would be wrong about corrupted data) they are at the top, and the report says FAILED."""
    from diffattr.report import Report, planted_section
    from diffattr.valuation import exact_shapley

    n, planted = 6, np.arange(6) >= 4
    harmful = np.where(planted, -0.3, 0.2)

    def game(effects: np.ndarray):
        return lambda mask: float(effects[mask].sum() + 0.1 * mask[:2].all())  # with an interaction

    tables = {}
    for label, effects in (("kernelshap-retrain", harmful), ("kernelshap-sparse_ft", -harmful)):
        values = exact_shapley(game(effects), n)
        tables[label] = pd.DataFrame({"name": list("abcdef"), "value": values, "planted": planted})
    table = planted_table(tables)
    assert table["passed"].tolist() == [True, False]
    assert table.loc[1, "ranks_from_bottom"] == "5, 6"
    table.to_csv(tmp_path / "planted.csv", index=False)
    body = planted_section(Report(tmp_path, {"planted": str(tmp_path / "planted.csv")}, {}, {})).body
    assert "The check FAILED for 1 of 2 values tables: kernelshap by sparse_ft values" in body
    assert "(e, f) 5, 6 from the bottom of 6; precision at 2 of the bottom 0.00: failed." in body
    assert "(e, f) 1, 2 from the bottom of 6; precision at 2 of the bottom 1.00: passed." in body
    table.iloc[:1].to_csv(tmp_path / "planted.csv", index=False)  # the harmful game's alone
    body = planted_section(Report(tmp_path, {"planted": str(tmp_path / "planted.csv")}, {}, {})).body
    assert "The check passed for every values table (1)." in body and "FAILED" not in body
