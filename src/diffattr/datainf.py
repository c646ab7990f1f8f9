"""DataInf (Kwon et al., ICLR 2024): influence with a closed-form inverse of the damped Gauss-Newton matrix.

DataInf swaps the inverse and the mean: (G + lam I)^-1, G = (1/N) sum_k g_k g_k^T, becomes
(1/N) sum_k (g_k g_k^T + lam I)^-1, and each term inverts by Sherman-Morrison. The score of training
image i for target j is then

    tau_ji = g_j^T [(1/N) sum_k (g_k g_k^T + lam I)^-1] g_i
           = (<g_j, g_i> - (1/N) sum_k <g_j, g_k> <g_k, g_i> / (lam + ||g_k||^2)) / lam,

in O(T N k) time with no matrix to factor. Here g are one featurizer's projected gradients of the full
model, and lam = lambda_rel times the mean ||g_k||^2 (TRAK's relative damping), chosen on held-out
targets from attribute.lambda_grid. Where this differs from the authors' code: one block of projected
features where they sum the formula over the layers of LoRA adapters, each with lam_l = 0.1 x the
mean ||g_l||^2 / d_l; and the sign is TRAK's (positive: the image lowers the target's loss), where
DataInf reports the change of the loss.
"""

from __future__ import annotations

import numpy as np

from diffattr.attribution import GradientInputs, ScoreFn


def datainf_scores(targets: np.ndarray, train: np.ndarray, lambda_rel: float) -> np.ndarray:
    """tau (T, N) of target features (T, k) against train features (N, k) at a relative damping."""
    targets, train = np.asarray(targets, np.float64), np.asarray(train, np.float64)
    squared_norms = np.einsum("ik,ik->i", train, train)
    lam = lambda_rel * squared_norms.mean()
    cross = targets @ train.T
    corrected = ((cross / (lam + squared_norms)[None, :]) @ train) @ train.T
    return (cross - corrected / len(train)) / lam


def datainf_score_function(method: dict, inputs: GradientInputs) -> ScoreFn:
    """Kind datainf's scores at a damping (rule local_scores)."""
    return lambda targets, lam: datainf_scores(targets, inputs.train, lam)
