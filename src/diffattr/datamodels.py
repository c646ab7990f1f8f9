"""Attribution fitted on retrained models (their own random subsets, never the LDS evaluation subsets):
empirical influence (Feldman & Zhang) and linear datamodels (ridge, Ilyas et al.)."""

from __future__ import annotations

import numpy as np


def empirical_influence(masks: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """(T, N): mean of -output over the models trained with image i minus the mean over those without it.

    masks (M, N) boolean, outputs (M, T) losses: a helpful image lowers the loss, hence the minus sign.
    An image that is in every subset or in none gets 0.
    """
    inside = masks.astype(np.float64)
    n_in, n_out = inside.sum(0), (1 - inside).sum(0)
    y = -np.asarray(outputs, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = (y.T @ inside) / n_in
        mean_out = (y.T @ (1 - inside)) / n_out
    return np.where((n_in > 0) & (n_out > 0), mean_in - mean_out, 0.0)


def datamodel_ridge(masks: np.ndarray, outputs: np.ndarray, alpha_rel: float) -> np.ndarray:
    """(T, N): ridge coefficients of -output_j on the subset indicators, with an intercept.

    The penalty is alpha_rel times the mean diagonal of the centred Gram matrix X^T X / N (the scale of
    one image's column), and the solution is taken in the dual form on the M x M kernel (M models < N).
    """
    x = masks.astype(np.float64)
    x = x - x.mean(0)
    y = -np.asarray(outputs, np.float64)
    y = y - y.mean(0)
    kernel = x @ x.T
    penalty = alpha_rel * np.trace(kernel) / x.shape[1]
    return (x.T @ np.linalg.solve(kernel + penalty * np.eye(len(x)), y)).T


def datamodel_ridge_cv(
    masks: np.ndarray, outputs: np.ndarray, alphas: list[float], folds: int
) -> tuple[np.ndarray, np.ndarray]:
    """((T, N) coefficients, (T,) penalties): per target, ridge of -output_j on the subset indicators with
    an intercept, its penalty chosen from `alphas` by `folds`-fold cross-validation over the models
    (consecutive folds, mean R^2), as D-TRAK's datamodel baseline (scikit-learn RidgeCV per target)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold

    x, y = masks.astype(np.float64), -np.asarray(outputs, np.float64)
    coefs, chosen = np.zeros((y.shape[1], x.shape[1])), np.zeros(y.shape[1])
    for j in range(y.shape[1]):
        fit = RidgeCV(alphas=list(alphas), cv=KFold(folds)).fit(x, y[:, j])
        coefs[j], chosen[j] = fit.coef_, fit.alpha_
    return coefs, chosen
