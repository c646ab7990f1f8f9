"""The linear datamodeling score (LDS), its bootstrap CIs over targets and over subsets, and damping
selection on held-out targets."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import rankdata

# Entries (draws x subsets x targets) ranked at once by the bootstrap over subsets: bounds its memory.
BOOTSTRAP_ENTRIES = 2**21


def _columnwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation between matching columns of a and b (M, T) -> (T,); NaN for constant columns."""
    ra = rankdata(a, axis=0)
    rb = rankdata(b, axis=0)
    ra -= ra.mean(0)
    rb -= rb.mean(0)
    denom = np.sqrt((ra**2).sum(0) * (rb**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(0) / denom, np.nan)


def lds_per_target(scores: np.ndarray, masks: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """For each target j: Spearman over subsets m of sum_{i in S_m} tau_ji and -output_m(j).

    scores (T, N), masks (M, N) boolean, outputs (M, T) losses. The output is a loss, so a helpful
    training sample (positive score) should lower it: hence the minus sign.
    """
    predicted = masks.astype(np.float64) @ scores.T
    return _columnwise_spearman(predicted, -outputs)


def bootstrap_ci(values: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile CI of the mean of `values` (NaNs dropped), resampling targets with replacement."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def subsets_bootstrap_ci(
    scores: np.ndarray, masks: np.ndarray, outputs: np.ndarray, n_boot: int, level: float, seed: int
) -> tuple[float, float]:
    """BCa CI of the LDS from resampling the M subsets with replacement, every target kept: D-TRAK's
    interval, as scipy.stats.bootstrap computes it, drawn by default_rng(seed).integers(0, M, (n_boot, M)).

    Each draw is the mean over targets of the Spearman over the drawn subsets, repeats included (tied
    ranks). Degenerate draws: a target whose drawn predictions or outputs are constant gives NaN and is
    left out of that draw's mean; a draw (or leave-one-out) in which every target does is skipped. NaN
    when no interval can be formed (no draws left, or all on one side of the estimate).
    """
    predicted = masks.astype(np.float64) @ scores.T
    negated = -np.asarray(outputs, np.float64)
    m = len(masks)
    estimate = _nanmean_rows(_columnwise_spearman(predicted, negated)[None])[0]
    draws = _drawn_lds(predicted, negated, np.random.default_rng(seed).integers(0, m, size=(n_boot, m)))
    draws = draws[~np.isnan(draws)]
    left_out = np.broadcast_to(np.arange(m), (m, m))[~np.eye(m, dtype=bool)].reshape(m, m - 1)
    jackknife = _drawn_lds(predicted, negated, left_out)
    jackknife = jackknife[~np.isnan(jackknife)]
    if len(draws) == 0 or len(jackknife) == 0:
        return float("nan"), float("nan")
    # bias correction z0 and acceleration a (Efron & Tibshirani 14.3, 15.4), as scipy computes them
    z0 = ndtri(((draws < estimate).sum() + (draws <= estimate).sum()) / (2 * len(draws)))
    spread = (len(jackknife) - 1) * (jackknife.mean() - jackknife)
    with np.errstate(invalid="ignore", divide="ignore"):
        accel = (spread**3).sum() / len(jackknife) ** 3 / ((spread**2).sum() / len(jackknife) ** 2) ** 1.5 / 6
        z = ndtri((1 - level) / 2) * np.array([1.0, -1.0])
        probs = ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    if not np.isfinite(probs).all():
        return float("nan"), float("nan")
    low, high = np.quantile(draws, probs)
    return float(low), float(high)


def _drawn_lds(predicted: np.ndarray, negated: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """The LDS of each row of subset indices `drawn` (D, m'): mean over targets of the Spearman over those
    subsets of `predicted` and `negated` (M, T), NaN targets left out; computed in chunks of rows."""
    d, m = drawn.shape
    t = predicted.shape[1]
    step = max(1, BOOTSTRAP_ENTRIES // max(1, m * t))
    means = []
    for start in range(0, d, step):
        rows = drawn[start : start + step]
        columns = len(rows) * t  # row b's target j is column b * t + j
        rho = _columnwise_spearman(
            predicted[rows].transpose(1, 0, 2).reshape(m, columns),
            negated[rows].transpose(1, 0, 2).reshape(m, columns),
        ).reshape(len(rows), t)
        means.append(_nanmean_rows(rho))
    return np.concatenate(means)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean of each row over its non-NaN entries; NaN for a row with none (without numpy's warning)."""
    finite = ~np.isnan(values)
    counts = finite.sum(1)
    sums = np.where(finite, values, 0.0).sum(1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def select_lambda(
    score_fn, lambda_grid: list[float], masks: np.ndarray, outputs_heldout: np.ndarray
) -> tuple[float, dict[float, float]]:
    """The damping with the best mean LDS on held-out targets; `score_fn(lam)` gives their scores."""
    results = {
        lam: float(np.nanmean(lds_per_target(score_fn(lam), masks, outputs_heldout))) for lam in lambda_grid
    }
    best = max(results, key=lambda lam: (np.nan_to_num(results[lam], nan=-np.inf), -lam))
    return best, results


def stack_outputs(records: list[dict[str, np.ndarray]], num_subsets: int, split: str) -> np.ndarray:
    """Measured outputs (M, T) of one target split, averaged over each subset's training seeds."""
    sums: dict[int, np.ndarray] = {}
    counts = np.zeros(num_subsets, int)
    for record in records:
        m = int(record["subset"])
        sums[m] = sums.get(m, 0) + record[split].astype(np.float64)
        counts[m] += 1
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        raise ValueError(f"no measured outputs for subsets {missing.tolist()}")
    return np.stack([sums[m] / counts[m] for m in range(num_subsets)])


def lds_summary(
    scores: np.ndarray, masks: np.ndarray, outputs: np.ndarray, n_boot: int, level: float, seed: int
) -> tuple[dict, np.ndarray]:
    """The LDS row and the per-target values: the mean over targets, its CI from resampling subsets (the
    papers' interval, first) and from resampling targets, both from the same seed, and the counts."""
    values = lds_per_target(scores, masks, outputs)
    subsets_low, subsets_high = subsets_bootstrap_ci(scores, masks, outputs, n_boot, level, seed)
    targets_low, targets_high = bootstrap_ci(values, n_boot, level, seed)
    row = {
        "lds": float(np.nanmean(values)),
        "subsets_ci_low": subsets_low,
        "subsets_ci_high": subsets_high,
        "targets_ci_low": targets_low,
        "targets_ci_high": targets_high,
        "n_targets": int(len(values)),
        "n_subsets": int(len(masks)),
    }
    return row, values


def shapley_lds(
    values: np.ndarray, masks: np.ndarray, measured: np.ndarray, n_boot: int, level: float, seed: int
) -> tuple[float, float, float]:
    """Spearman over held-out coalitions of (sum of kept players' values, measured property), with a CI
    from resampling coalitions; NaN when the values predict one property for every coalition (ties)."""
    predicted = masks.astype(np.float64) @ values
    rho = float(_columnwise_spearman(predicted[:, None], measured[:, None])[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(masks), size=(n_boot, len(masks)))
    draws = _columnwise_spearman(predicted[idx].T, measured[idx].T)
    if np.isnan(draws).all():  # tied predictions in every resample: no CI either
        return rho, float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return rho, float(low), float(high)


def shapley_lds_per_seed(
    values: np.ndarray, masks: np.ndarray, measured: np.ndarray, n_boot: int, level: float, seed: int
) -> dict:
    """Lu et al.'s Shapley LDS: one Spearman per retraining seed (measured: coalitions x seeds), their mean
    and a normal CI over seeds (mean +- z SE); with one seed, the CI comes from resampling coalitions.
    Also the Spearman against the seed-averaged property (`seed_averaged`, with its coalition CI)."""
    from scipy.stats import norm

    measured = np.asarray(measured, np.float64).reshape(len(masks), -1)
    per_seed = [
        shapley_lds(values, masks, measured[:, s], n_boot, level, seed) for s in range(measured.shape[1])
    ]
    rhos = np.array([r[0] for r in per_seed])
    averaged = shapley_lds(values, masks, measured.mean(1), n_boot, level, seed)
    if len(rhos) > 1:
        half = norm.ppf(0.5 + level / 2) * rhos.std(ddof=1) / np.sqrt(len(rhos))
        low, high, over = rhos.mean() - half, rhos.mean() + half, "seeds"
    else:
        low, high, over = per_seed[0][1], per_seed[0][2], "coalitions"
    return {
        "lds": float(rhos.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "ci_over": over,
        "lds_per_seed": " ".join(f"{r:.4f}" for r in rhos),
        "lds_seed_averaged": averaged[0],
        "seed_averaged_ci_low": averaged[1],
        "seed_averaged_ci_high": averaged[2],
    }


def correlation_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int, level: float, seed: int, method: str = "pearson"
) -> tuple[float, float, float]:
    """Pearson or Spearman correlation of paired values with a percentile CI from resampling pairs."""
    corr = _pearson_rows if method == "pearson" else lambda x, y: _columnwise_spearman(x.T, y.T)
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(corr(a[idx], b[idx]), [tail, 100 - tail])
    return float(corr(a[None], b[None])[0]), float(low), float(high)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    denom = np.sqrt((a**2).sum(1) * (b**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(1) / denom, np.nan)
