"""Influence variants on the same projected gradients: relative / renormalised IF, gradient dot and
cosine, Diffusion-TracIn / ReTrac summed over training checkpoints, and these kinds' scoring functions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from diffattr.attribution import GradientInputs, ScoreFn, TrakScorer


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


def retrac(checkpoints: Iterable[tuple[float, np.ndarray, np.ndarray]]) -> np.ndarray:
    """ReTrac: TracIn with each training gradient at unit norm."""
    return tracin(checkpoints, renormalize=True)


def relative_influence_function(method: dict, inputs: GradientInputs) -> ScoreFn:
    """Kind relative_if's scores at a damping (rule local_scores)."""
    return lambda targets, lam: relative_influence(inputs.scorer, targets, lam)


def renormalized_influence_function(method: dict, inputs: GradientInputs) -> ScoreFn:
    """Kind renormalized_if's scores at a damping (rule local_scores)."""
    return lambda targets, lam: renormalized_influence(inputs.scorer, targets, lam)


def gradient_dot_function(method: dict, inputs: GradientInputs) -> ScoreFn:
    """Kind grad_dot's scores, undamped (rule local_scores)."""
    return lambda targets, lam: gradient_similarity(targets, inputs.train)


def gradient_cosine_function(method: dict, inputs: GradientInputs) -> ScoreFn:
    """Kind grad_cosine's scores, undamped (rule local_scores)."""
    return lambda targets, lam: gradient_similarity(targets, inputs.train, cosine=True)
