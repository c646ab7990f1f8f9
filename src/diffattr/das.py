"""DAS (Lin et al., ICLR 2025): the training residuals, their per-sample weights, and the DAS scores.

DAS scores the change of the noise predictor's output: its featurizer uses the `mean` output with
each timestep's gradient normalised before averaging (`normalize_timesteps`), and its score is the
D-TRAK score of those features times a weight per training sample from the full model's errors on
that sample. The authors' committed code (Jinxu-Lin/DAS, CIFAR2/07_scpre.py and 3_error.py) does not
run as written, so this follows the paper's formulas instead: the weight vector is broadcast over
targets (their `error_train.unsqueeze(1)` broadcasts it over the wrong axis of a targets x train
matrix), the leverage is each train sample's own h_i (they take the diagonal of the targets x train
matrix, and `args.dim` does not exist), the squared variant squares the weight (theirs squares the
whole score, which discards its sign), the errors come from the trained model (their
`model.from_pretrained(...)` result is discarded, leaving random weights), and the damping is chosen
on held-out targets (theirs picks the best LDS on the reported targets).
"""

from __future__ import annotations

import numpy as np

from diffattr.attribution import TrakScorer


def residual_weights(errors: np.ndarray, squared: bool = False) -> np.ndarray:
    """w_i = mean_t sqrt(e_it) / ||sqrt(e_i)||_2 (N,), or w_i^2 for the squared variant."""
    roots = np.sqrt(np.asarray(errors, np.float64))
    weights = roots.mean(1) / np.maximum(np.linalg.norm(roots, axis=1), 1e-30)
    return weights**2 if squared else weights


def das_scores(
    scorer: TrakScorer, targets: np.ndarray, lambda_rel: float, weights: np.ndarray, leverage: bool = False
) -> np.ndarray:
    """tau_ji * w_i, divided by (1 - h_i)^2 with h_i the leverage under the same damping if `leverage`."""
    scores = scorer.scores(targets, lambda_rel) * weights[None, :]
    if leverage:
        scores /= (1.0 - scorer.leverage(lambda_rel))[None, :] ** 2
    return scores
