"""LDS against a direct Spearman computation; bootstrap CIs over targets and over subsets (the latter
against D-TRAK's scipy.stats.bootstrap of scipy's Spearman); damping chosen on held-out targets."""

import warnings

import numpy as np
import pytest
from scipy.stats import bootstrap, spearmanr

from diffattr import metrics
from diffattr.metrics import (
    bootstrap_ci,
    lds_per_target,
    lds_summary,
    select_lambda,
    stack_outputs,
    subsets_bootstrap_ci,
)


def test_lds_equals_direct_spearman_on_hand_made_case():
    scores = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, 2.0, -1.0]])
    masks = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 0]], bool)
    outputs = np.array([[0.9, 0.1], [0.5, 0.3], [0.2, 0.7], [0.1, 0.6], [0.4, 0.2]])
    got = lds_per_target(scores, masks, outputs)
    for j in range(2):
        margins = [scores[j, m].sum() for m in masks]
        assert np.isclose(got[j], spearmanr(margins, -outputs[:, j]).statistic)


def test_perfect_linear_datamodel_has_lds_one():
    rng = np.random.default_rng(0)
    tau = rng.normal(size=(3, 20))
    masks = rng.random((30, 20)) < 0.5
    outputs = -(masks @ tau.T)  # helpful samples lower the loss
    np.testing.assert_allclose(lds_per_target(tau, masks, outputs), 1.0)
    np.testing.assert_allclose(lds_per_target(-tau, masks, outputs), -1.0)


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_more_targets():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.3, 0.1, 20), rng.normal(0.3, 0.1, 2000)
    lo_s, hi_s = bootstrap_ci(small, 500, 0.95, 0)
    lo_l, hi_l = bootstrap_ci(large, 500, 0.95, 0)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < hi_s - lo_s


def test_lds_summary_row_matches_its_parts():
    rng = np.random.default_rng(2)
    tau = rng.normal(size=(30, 20))
    masks = rng.random((16, 20)) < 0.5
    outputs = -(masks @ tau.T) + rng.normal(scale=3.0, size=(16, 30))
    row, values = lds_summary(tau, masks, outputs, 200, 0.95, 0)
    assert np.isclose(row["lds"], values.mean())
    assert row["subsets_ci_low"] < row["lds"] < row["subsets_ci_high"]
    assert row["targets_ci_low"] < row["lds"] < row["targets_ci_high"]
    assert (row["targets_ci_low"], row["targets_ci_high"]) == bootstrap_ci(values, 200, 0.95, 0)
    assert (row["n_targets"], row["n_subsets"]) == (30, 16)
    assert list(row)[:5] == ["lds", "subsets_ci_low", "subsets_ci_high", "targets_ci_low", "targets_ci_high"]


def dtrak_interval(
    scores: np.ndarray, masks: np.ndarray, outputs: np.ndarray, n_boot: int, level: float, seed: int
) -> tuple[float, float]:
    """D-TRAK's notebook: scipy.stats.bootstrap (BCa) over the subsets' indices of the mean over targets of
    scipy's Spearman between the drawn subsets' summed scores and negated losses (NaN targets left out)."""
    predicted = masks @ scores.T

    def statistic(drawn: np.ndarray) -> float:
        rhos = [spearmanr(predicted[drawn, j], -outputs[drawn, j]).statistic for j in range(len(scores))]
        return np.nanmean(rhos)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's warning on a constant target
        result = bootstrap(
            (np.arange(len(masks)),),
            statistic,
            n_resamples=n_boot,
            confidence_level=level,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    return result.confidence_interval.low, result.confidence_interval.high


def test_subsets_ci_is_dtraks_bootstrap_of_scipys_spearman(monkeypatch):
    """Equal to D-TRAK's computation, with a target whose losses are constant (NaN, left out of every
    draw) and with the draws ranked one at a time (the memory bound)."""
    rng = np.random.default_rng(4)
    tau = rng.normal(size=(20, 30))
    masks = rng.random((10, 30)) < 0.5
    outputs = -(masks @ tau.T) + rng.normal(scale=3.0, size=(10, 20))
    outputs[:, 0] = 1.0
    expected = dtrak_interval(tau, masks, outputs, 150, 0.9, 7)
    assert np.allclose(subsets_bootstrap_ci(tau, masks, outputs, 150, 0.9, 7), expected, rtol=0, atol=1e-12)
    monkeypatch.setattr(metrics, "BOOTSTRAP_ENTRIES", 1)
    assert np.allclose(subsets_bootstrap_ci(tau, masks, outputs, 150, 0.9, 7), expected, rtol=0, atol=1e-12)


def test_subsets_ci_is_nan_when_every_draw_is_degenerate():
    masks = np.tile(np.array([[True, False, True]]), (4, 1))  # the same subset 4 times: no Spearman
    tau, outputs = np.ones((3, 3)), np.arange(12.0).reshape(4, 3)
    assert np.isnan(subsets_bootstrap_ci(tau, masks, outputs, 50, 0.95, 0)).all()


def test_the_two_intervals_differ_with_many_targets_and_few_subsets():
    """A disturbance of each subset's model shared by all 300 targets: resampling targets cannot see it,
    resampling the 10 subsets does, so the papers' interval is several times wider."""
    rng = np.random.default_rng(0)
    tau = rng.normal(size=(300, 40))
    masks = rng.random((10, 40)) < 0.5
    predicted = masks @ tau.T
    shared = rng.normal(scale=1.5 * predicted.std(), size=(10, 1))
    outputs = -predicted + shared + rng.normal(scale=0.3 * predicted.std(), size=predicted.shape)
    row, _ = lds_summary(tau, masks, outputs, 200, 0.95, 0)
    subsets = row["subsets_ci_high"] - row["subsets_ci_low"]
    targets = row["targets_ci_high"] - row["targets_ci_low"]
    assert row["subsets_ci_low"] < row["lds"] < row["subsets_ci_high"] and subsets > 3 * targets, row


def test_select_lambda_uses_only_what_it_is_given():
    masks = np.random.default_rng(3).random((25, 10)) < 0.5
    tau = np.arange(10.0)[None]
    outputs = -(masks @ tau.T)
    best, table = select_lambda(lambda lam: tau * (1 if lam == 1.0 else -1), [0.1, 1.0, 10.0], masks, outputs)
    assert best == 1.0 and table[1.0] > table[0.1]


def test_stack_outputs_averages_seeds_per_subset():
    records = [
        {"subset": m, "val": np.array([m + s]), "gen": np.array([0.0])} for m in range(3) for s in (0, 1)
    ]
    np.testing.assert_allclose(stack_outputs(records, 3, "val")[:, 0], [0.5, 1.5, 2.5])


def test_shapley_lds_and_correlations_match_scipy():
    from scipy.stats import pearsonr, spearmanr

    from diffattr.metrics import correlation_ci, shapley_lds

    rng = np.random.default_rng(0)
    values = rng.normal(size=6)
    masks = rng.random((30, 6)) < 0.5
    measured = masks @ values + rng.normal(scale=0.5, size=30)
    rho, low, high = shapley_lds(values, masks, measured, n_boot=200, level=0.95, seed=0)
    assert rho == pytest.approx(spearmanr(masks @ values, measured).statistic)
    assert low <= rho <= high
    a, b = rng.normal(size=20), rng.normal(size=20)
    r, low, high = correlation_ci(a, b, n_boot=200, level=0.95, seed=0)
    assert r == pytest.approx(pearsonr(a, b).statistic) and low <= r <= high
    r, _, _ = correlation_ci(a, b, n_boot=50, level=0.95, seed=0, method="spearman")
    assert r == pytest.approx(spearmanr(a, b).statistic)


def test_shapley_lds_per_seed_is_the_mean_of_spearmans_with_a_normal_ci_over_seeds():
    from scipy.stats import spearmanr

    from diffattr.metrics import shapley_lds_per_seed

    rng = np.random.default_rng(1)
    values = rng.normal(size=5)
    masks = rng.random((20, 5)) < 0.5
    measured = (masks @ values)[:, None] + rng.normal(scale=1.0, size=(20, 3))
    out = shapley_lds_per_seed(values, masks, measured, n_boot=100, level=0.95, seed=0)
    rhos = [spearmanr(masks @ values, measured[:, s]).statistic for s in range(3)]
    half = 1.959964 * np.std(rhos, ddof=1) / np.sqrt(3)
    assert out["lds"] == pytest.approx(np.mean(rhos))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((np.mean(rhos) - half, np.mean(rhos) + half))
    assert out["ci_over"] == "seeds"
    assert out["lds_seed_averaged"] == pytest.approx(spearmanr(masks @ values, measured.mean(1)).statistic)
    one = shapley_lds_per_seed(values, masks, measured[:, :1], n_boot=100, level=0.95, seed=0)
    assert one["ci_over"] == "coalitions" and one["ci_low"] <= one["lds"] <= one["ci_high"]


def test_shapley_lds_is_nan_when_the_values_predict_one_property_for_every_coalition():
    """All-zero values (a datamodel fitted on tied properties) rank no coalition: NaN, not an error."""
    from diffattr.metrics import shapley_lds_per_seed

    masks = np.random.default_rng(0).random((6, 4)) < 0.5
    measured = np.arange(6.0)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = shapley_lds_per_seed(np.zeros(4), masks, measured, n_boot=20, level=0.95, seed=0)
    assert np.isnan([out["lds"], out["ci_low"], out["ci_high"], out["lds_seed_averaged"]]).all()
