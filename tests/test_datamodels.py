"""Empirical influence and ridge datamodels against direct computations."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from diffattr.datamodels import datamodel_ridge, datamodel_ridge_cv, empirical_influence


def test_empirical_influence_by_a_plain_loop():
    rng = np.random.default_rng(0)
    masks = rng.random((12, 5)) < 0.5
    masks[:, 4] = True  # always in: no contrast
    outputs = rng.normal(size=(12, 3))
    got = empirical_influence(masks, outputs)
    for j in range(3):
        for i in range(5):
            inside, outside = outputs[masks[:, i], j], outputs[~masks[:, i], j]
            expected = 0.0 if len(outside) == 0 else -inside.mean() + outside.mean()
            assert got[j, i] == pytest.approx(expected)


def test_datamodel_is_ridge_with_an_intercept_on_the_negated_outputs():
    rng = np.random.default_rng(1)
    masks = rng.random((10, 30)) < 0.5
    outputs = rng.normal(size=(10, 2))
    got = datamodel_ridge(masks, outputs, 0.5)
    x = masks.astype(float)
    penalty = 0.5 * np.sum((x - x.mean(0)) ** 2) / 30
    expected = Ridge(alpha=penalty, fit_intercept=True).fit(x, -outputs).coef_
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_datamodel_recovers_a_planted_linear_model():
    rng = np.random.default_rng(2)
    masks = rng.random((400, 8)) < 0.5
    weights = rng.normal(size=8)
    outputs = -(masks @ weights)[:, None] + 3.0
    np.testing.assert_allclose(datamodel_ridge(masks, outputs, 1e-6)[0], weights, atol=1e-4)


def test_datamodel_penalty_per_target_by_cross_validation_equals_a_plain_loop():
    """Per target: each penalty's mean R^2 over 5 consecutive folds of the models, the best refitted on
    all, computed here by the closed form of ridge with an intercept."""
    rng = np.random.default_rng(0)
    masks = rng.random((20, 8)) < 0.5
    outputs = masks @ rng.normal(size=(8, 3)) * np.array([1.0, 0.1, 3.0]) + rng.normal(size=(20, 3))
    alphas = [0.1, 1.0, 10.0]

    def ridge(x, y, alpha):
        xm, ym = x.mean(0), y.mean()
        w = np.linalg.solve((x - xm).T @ (x - xm) + alpha * np.eye(x.shape[1]), (x - xm).T @ (y - ym))
        return w, ym - xm @ w

    coefs, chosen = datamodel_ridge_cv(masks, outputs, alphas, folds=5)
    x = masks.astype(float)
    for j in range(3):
        y = -outputs[:, j]
        r2 = []
        for alpha in alphas:
            scores = []
            for fold in np.array_split(np.arange(20), 5):
                train = np.setdiff1d(np.arange(20), fold)
                w, b = ridge(x[train], y[train], alpha)
                pred = x[fold] @ w + b
                scores.append(1 - ((y[fold] - pred) ** 2).sum() / ((y[fold] - y[fold].mean()) ** 2).sum())
            r2.append(np.mean(scores))
        best = alphas[int(np.argmax(r2))]
        assert chosen[j] == best
        np.testing.assert_allclose(coefs[j], ridge(x, y, best)[0], rtol=1e-8, atol=1e-10)
