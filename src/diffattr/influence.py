"""Influence variants on the same projected gradients: relative / renormalised IF, gradient dot and
cosine, Diffusion-TracIn / ReTrac summed over training checkpoints, and the damped kinds' score functions."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from diffattr.attribution import TrakScorer
from diffattr.das import das_scores, residual_weights
from diffattr.errors import InputError


def relative_influence(scorer: TrakScorer, targets: np.ndarray, lambda_rel: float) -> np.ndarray:
    """tau_ji / ||row_i of Phi (Phi^T Phi + lam I)^-1||: influence a sample's leverage cannot inflate."""
    return (
        scorer.scores(targets, lambda_rel)
        / np.maximum(scorer.influence_row_norms(lambda_rel), 1e-30)[None, :]
    )


def renormalized_influence(scorer: TrakScorer, targets: np.ndarray, lambda_rel: float) -> np.ndarray:
    """tau_ji / ||phi_i||: influence with each training gradient's norm divided out."""
    return scorer.scores(targets, lambda_rel) / np.maximum(scorer.train_norms(), 1e-30)[None, :]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def gradient_similarity(targets: np.ndarray, train: np.ndarray, cosine: bool = False) -> np.ndarray:
    """<phi_target, phi_i> (TracIn at the final model) or their cosine: (T, N)."""
    targets, train = np.asarray(targets, np.float64), np.asarray(train, np.float64)
    if cosine:
        return _unit_rows(targets) @ _unit_rows(train).T
    return targets @ train.T


def tracin(
    checkpoints: Iterable[tuple[float, np.ndarray, np.ndarray]], renormalize: bool = False
) -> np.ndarray:
    """sum_c eta_c <g_target^c, g_i^c> over (eta_c, train features (N, k), target features (T, k)).

    eta_c is checkpoint c's weight (checkpoints.checkpoint_weight). With `renormalize` (ReTrac) each
    training gradient is divided by its norm, which with features from a timestep-normalised
    featurizer makes a timestep-wise cosine TracIn.
    """
    total = None
    for weight, train, targets in checkpoints:
        train = np.asarray(train, np.float64)
        term = weight * (np.asarray(targets, np.float64) @ (_unit_rows(train) if renormalize else train).T)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("TracIn needs at least one checkpoint")
    return total


def damped_score_function(
    method: dict, scorer: TrakScorer, errors: np.ndarray | None = None
) -> Callable[[np.ndarray, float], np.ndarray]:
    """scores(targets, lambda_rel) of a damped method kind: das, relative_if or renormalized_if."""
    kind = method["kind"]
    if kind == "das":
        if errors is None:
            raise ValueError("kind das needs the training errors")
        weights = residual_weights(errors)
        return lambda targets, lam: das_scores(
            scorer, targets, lam, weights, method["leverage"], method["squared"]
        )
    if kind == "relative_if":
        return lambda targets, lam: relative_influence(scorer, targets, lam)
    if kind == "renormalized_if":
        return lambda targets, lam: renormalized_influence(scorer, targets, lam)
    raise InputError(f"method kind {kind!r} is not a damped kind (das, relative_if, renormalized_if)")
