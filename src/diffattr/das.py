"""DAS (Lin et al., ICLR 2025): the training residuals, their per-sample weights, and the DAS scores.

DAS scores the change of the noise predictor's output: its featurizer uses the `mean` output with
each timestep's gradient normalised before averaging (`normalize_timesteps`). The score of training
sample i for target j is tau_ji * w_i, with tau_ji the D-TRAK score of those features and
w_i = mean_t sqrt(e_it) / ||sqrt(e_i)||_2 a weight from the full model's errors e_it on sample i.
`leverage` also divides it by (1 - h_i)^2, h_i = phi_i^T (Phi^T Phi + lambda I)^-1 phi_i; `squared`
squares the whole score, (tau_ji * w_i)^2 or (tau_ji * w_i / (1 - h_i)^2)^2, which discards its sign
(the authors' DAS1squ / DAS0squ).

Where this differs from the authors' code (Jinxu-Lin/DAS, 07_score.py / 07_scpre.py, 3_error.py):
- w_i multiplies column i of the targets x train scores (in DAS1 / DAS1squ their
  `error_train.unsqueeze(1)` is broadcast over the targets axis: an error unless T = N, and then it
  weights the targets);
- the leverage variant applies (Phi^T Phi + lambda I)^-1 once and h_i is each train sample's own
  leverage (DAS0 / DAS0squ apply the inverse twice, take h from the diagonal of the targets x train
  scores, and read an `args.dim` that does not exist);
- the errors come from the trained model (their `model.from_pretrained(...)` result is discarded,
  leaving random weights), at the featurizer's timesteps with its fixed noise (theirs: every
  training timestep);
- lambda is relative to the mean kernel diagonal and chosen on held-out targets (theirs is absolute,
  the inverse is rescaled by its mean absolute value, and the best LDS on the reported targets wins).
"""

from __future__ import annotations

import numpy as np

from diffattr.attribution import GradientInputs, ScoreFn, TrakScorer


def residual_weights(errors: np.ndarray) -> np.ndarray:
    """w_i = mean_t sqrt(e_it) / ||sqrt(e_i)||_2 (N,) from the errors e (N, timesteps)."""
    roots = np.sqrt(np.asarray(errors, np.float64))
    return roots.mean(1) / np.maximum(np.linalg.norm(roots, axis=1), 1e-30)


def das_scores(
    scorer: TrakScorer,
    targets: np.ndarray,
    lambda_rel: float,
    weights: np.ndarray,
    leverage: bool = False,
    squared: bool = False,
) -> np.ndarray:
    """tau_ji * w_i, divided by (1 - h_i)^2 (h_i the leverage at the same damping) if `leverage`, and
    the whole score squared if `squared`."""
    scores = scorer.scores(targets, lambda_rel) * weights[None, :]
    if leverage:
        scores /= (1.0 - scorer.leverage(lambda_rel))[None, :] ** 2
    if squared:
        scores **= 2
    return scores


def das_score_function(method: dict, inputs: GradientInputs) -> ScoreFn:
    """Kind das's scores at a damping, with the method's `leverage` and `squared` (rule local_scores)."""
    weights = residual_weights(inputs.errors)
    return lambda targets, lam: das_scores(
        inputs.scorer, targets, lam, weights, method["leverage"], method["squared"]
    )
