"""LDS against a direct Spearman computation; bootstrap CIs; damping chosen on held-out targets."""

import numpy as np
from scipy.stats import spearmanr

from diffattr.metrics import (bootstrap_ci, lds_per_target, lds_summary, residualize, select_lambda,
                              stack_outputs)


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


def test_class_adjustment_removes_a_pure_class_effect():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 10)
    masks = rng.random((40, 20)) < 0.5
    n_class0 = masks[:, labels == 0].sum(1, keepdims=True).astype(float)
    outputs = -n_class0 + 0.3 * rng.normal(size=(40, 200))  # 200 targets, loss set by class mix alone
    assert np.allclose(residualize(n_class0 * np.ones((1, 3)), n_class0), 0)
    class_score = np.where(labels == 0, 1.0, 0.0)[None].repeat(200, 0)
    row, _ = lds_summary(class_score, masks, outputs, labels, 100, 0.95, 0)
    assert row["lds"] > 0.8
    assert abs(row["lds_class_adjusted"]) < 0.05


def test_select_lambda_uses_only_what_it_is_given():
    masks = np.random.default_rng(3).random((25, 10)) < 0.5
    tau = np.arange(10.0)[None]
    outputs = -(masks @ tau.T)
    best, table = select_lambda(lambda lam: tau * (1 if lam == 1.0 else -1), [0.1, 1.0, 10.0], masks, outputs)
    assert best == 1.0 and table[1.0] > table[0.1]


def test_stack_outputs_averages_seeds_per_subset():
    records = [{"subset": m, "val": np.array([m + s]), "gen": np.array([0.0])}
               for m in range(3) for s in (0, 1)]
    np.testing.assert_allclose(stack_outputs(records, 3, "val")[:, 0], [0.5, 1.5, 2.5])
