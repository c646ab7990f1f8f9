"""Data valuation of contributors from coalition games: KernelSHAP, Banzhaf, leave-one-out, ridge datamodel.

A game is a set of (coalition mask, value) pairs: here, the global property of a model trained
(or fine-tuned) on the data of the contributors in the coalition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

from diffattr.errors import InputError
from diffattr.registry import ESTIMATORS


def shapley_kernel_size_probabilities(n: int) -> np.ndarray:
    """P(s) for s = 1..n-1, proportional to (n - 1) / (s (n - s)): KernelSHAP's coalition-size law."""
    sizes = np.arange(1, n)
    weights = (n - 1) / (sizes * (n - sizes))
    return weights / weights.sum()


def sample_kernelshap_coalitions(n: int, count: int, seed: int) -> np.ndarray:
    """Boolean (count, n): a size drawn from the Shapley kernel, then a uniform coalition of that size."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice(np.arange(1, n), size=count, p=shapley_kernel_size_probabilities(n))
    masks = np.zeros((count, n), dtype=bool)
    for row, size in zip(masks, sizes, strict=True):
        row[rng.choice(n, size=size, replace=False)] = True
    return masks


def enumerated_kernelshap_coalitions(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Boolean (count, n) KernelSHAP coalitions, their regression weights and how many of them (the first
    rows) are enumerated rather than drawn, stratified by size as shap's
    KernelExplainer does: every coalition of sizes 1 and n - 1, then 2 and n - 2, ... (the heaviest
    Shapley-kernel sizes first) while `count` covers the whole pair; the rest drawn from the kernel
    restricted to the sizes left. An enumerated coalition of size s weighs P(s) / C(n, s), a drawn one the
    sizes' remaining mass / draws; weights sum to `count`. When not even sizes 1 and n - 1 fit, this is
    `sample_kernelshap_coalitions` with unit weights."""
    probs = dict(zip(range(1, n), shapley_kernel_size_probabilities(n), strict=True))
    rows, weights, left = [], [], count
    for small in range(1, n // 2 + 1):
        pair = sorted({small, n - small})
        if sum(comb(n, s) for s in pair) > left:
            break
        for size in pair:
            weight = probs.pop(size) / comb(n, size)
            for members in combinations(range(n), size):
                row = np.zeros(n, dtype=bool)
                row[list(members)] = True
                rows.append(row)
                weights.append(weight)
        left = count - len(rows)
    if not rows:
        return sample_kernelshap_coalitions(n, count, seed), np.ones(count), 0
    if left and not probs:
        raise InputError(
            f"config key 'shapley.num_coalitions': {count} is more than the {2**n - 2} coalitions of "
            f"{n} contributors (neither empty nor full)"
        )
    if left:
        rng = np.random.default_rng(seed)
        sizes, mass = np.array(list(probs)), np.array(list(probs.values()))
        for size in rng.choice(sizes, size=left, p=mass / mass.sum()):
            row = np.zeros(n, dtype=bool)
            row[rng.choice(n, size=size, replace=False)] = True
            rows.append(row)
            weights.append(mass.sum() / left)
    weights = np.array(weights)
    return np.array(rows), weights * count / weights.sum(), count - left


def sample_uniform_coalitions(n: int, count: int, seed: int, keep: float = 0.5) -> np.ndarray:
    """Boolean (count, n): every player in independently with probability `keep` (Banzhaf sampling)."""
    return np.random.default_rng(seed).random((count, n)) < keep


def sample_heldout_coalitions(
    n: int, count: int, alpha: float, seed: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Boolean (count, n): uniform coalitions of exactly round(alpha * n) players (the Shapley-LDS set),
    each drawn again while it coincides with a row of `exclude` (the fit coalitions), so that no
    held-out coalition was seen by the values (Lu et al. drop such overlaps)."""
    size = int(round(alpha * n))
    rows = np.zeros((0, n), bool) if exclude is None else np.asarray(exclude, bool)
    excluded = {row.tobytes() for row in rows if row.sum() == size}
    available = comb(n, size) - len(excluded)
    if count and available < 1:
        raise InputError(
            f"config key 'shapley.heldout.alpha': every coalition of {size} of {n} contributors "
            "is a fit coalition"
        )
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, n), dtype=bool)
    for row in masks:
        while True:
            row[:] = False
            row[rng.choice(n, size=size, replace=False)] = True
            if row.tobytes() not in excluded:
                break
    return masks


def leave_one_out_coalitions(n: int) -> np.ndarray:
    """The n coalitions that drop exactly one player."""
    return ~np.eye(n, dtype=bool)


def kernelshap(
    masks: np.ndarray,
    values: np.ndarray,
    v_empty: float,
    v_full: float,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Least squares of v(S) - v(empty) on membership, constrained so the values sum to v(full) - v(empty).

    With coalitions drawn from the Shapley kernel (`sample_kernelshap_coalitions`), the regression is
    unweighted; its solution converges to the Shapley values. `weights` weigh each coalition's residual
    (those of `enumerated_kernelshap_coalitions`); with every coalition enumerated the solution is exact.
    """
    a = masks.astype(np.float64)
    n = a.shape[1]
    w = np.ones(len(a)) if weights is None else np.asarray(weights, np.float64)
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = 2 * a.T @ (w[:, None] * a)
    kkt[:n, n] = kkt[n, :n] = 1.0
    rhs = np.concatenate([2 * a.T @ (w * (values - v_empty)), [v_full - v_empty]])
    return np.linalg.lstsq(kkt, rhs, rcond=None)[0][:n]


def banzhaf(masks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Maximum-sample-reuse Banzhaf: mean value of coalitions with player i minus without it."""
    inside = masks.astype(np.float64)
    with_i = (inside * values[:, None]).sum(0) / np.maximum(inside.sum(0), 1)
    without_i = ((1 - inside) * values[:, None]).sum(0) / np.maximum((1 - inside).sum(0), 1)
    return with_i - without_i


def leave_one_out(masks: np.ndarray, values: np.ndarray, v_full: float) -> np.ndarray:
    """v(full) - v(full without i), for coalitions from `leave_one_out_coalitions` (any order)."""
    out = np.full(masks.shape[1], np.nan)
    for row, value in zip(masks, values, strict=True):
        if row.sum() == len(row) - 1:
            out[np.flatnonzero(~row)[0]] = v_full - value
    return out


DATAMODEL_PENALTIES = np.linspace(0.01, 10, 100)  # Lu et al.'s RidgeCV grid


def datamodel(masks: np.ndarray, values: np.ndarray, ridge: float | None = None) -> np.ndarray:
    """Ridge regression of the value on coalition membership (with an unpenalised intercept).

    ridge None: the penalty is chosen from DATAMODEL_PENALTIES by leave-one-out cross-validation
    (scikit-learn's RidgeCV), as Lu et al.'s datamodel baseline; a number: that penalty times the
    number of coalitions."""
    if ridge is None:
        from sklearn.linear_model import RidgeCV

        return RidgeCV(alphas=DATAMODEL_PENALTIES).fit(masks.astype(np.float64), values).coef_
    a = masks.astype(np.float64)
    a_centered = a - a.mean(0)
    y = values - values.mean()
    return np.linalg.solve(a_centered.T @ a_centered + ridge * len(a) * np.eye(a.shape[1]), a_centered.T @ y)


@dataclass
class Valuation:
    """Values per player with bootstrap standard errors (resampling coalitions)."""

    values: np.ndarray
    stderr: np.ndarray


def with_bootstrap(
    estimator: Callable[[np.ndarray, np.ndarray], np.ndarray],
    masks: np.ndarray,
    values: np.ndarray,
    n_boot: int,
    seed: int,
    weights: np.ndarray | None = None,
    enumerated: int = 0,
) -> Valuation:
    """Run `estimator(masks, values)` and estimate its standard error by resampling coalitions; with
    `weights` (one per coalition, resampled with it), `estimator(masks, values, weights)`. The first
    `enumerated` coalitions are kept in every resample (an enumerated stratum has no sampling error);
    with every coalition enumerated there is nothing to resample and the standard errors are NaN."""
    rng = np.random.default_rng(seed)
    drawn = np.arange(enumerated, len(masks))

    def fit(idx: np.ndarray) -> np.ndarray:
        if weights is None:
            return estimator(masks[idx], values[idx])
        return estimator(masks[idx], values[idx], weights[idx])

    point = fit(np.arange(len(masks)))
    if not len(drawn):
        return Valuation(point, np.full(len(point), np.nan))
    kept = np.arange(enumerated)
    draws = [fit(np.concatenate([kept, rng.choice(drawn, len(drawn))])) for _ in range(n_boot)]
    return Valuation(point, np.nanstd(np.stack(draws), axis=0, ddof=1))


def exact_shapley(value_fn: Callable[[np.ndarray], float], n: int) -> np.ndarray:
    """Exact Shapley values by enumerating all 2^n coalitions (n <= 16)."""
    masks = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    values = np.array([value_fn(m) for m in masks])
    index = {int((m * (1 << np.arange(n))).sum()): v for m, v in zip(masks, values, strict=True)}
    phi = np.zeros(n)
    for code, v in index.items():
        size = bin(code).count("1")
        for i in range(n):
            if code >> i & 1:
                phi[i] += (v - index[code ^ (1 << i)]) / (n * comb(n - 1, size - 1))
    return phi


def exact_banzhaf(value_fn: Callable[[np.ndarray], float], n: int) -> np.ndarray:
    """Exact Banzhaf values by enumeration (n <= 16)."""
    masks = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    return banzhaf(masks, np.array([value_fn(m) for m in masks]))


def coalition_design(
    estimator: str, n: int, count: int, seed: int, enumerate_sizes: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """The fit coalitions an estimator needs, their regression weights and how many (the first rows) are
    enumerated: Shapley-kernel draws (with `enumerate_sizes`, the heaviest sizes enumerated:
    `enumerated_kernelshap_coalitions`), uniform draws, or the n leave-one-outs; weights are 1 and none
    enumerated but for enumerated KernelSHAP designs."""
    if n < 2:
        raise InputError(
            f"config key 'shapley.contributors': {n} contributor found, values need at least 2 "
            "(check contributors.by and the data's labels or metadata column)"
        )
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r} (known: {list(ESTIMATORS)})")
    design = ESTIMATORS[estimator].design
    if design == "shapley_kernel" and enumerate_sizes:
        return enumerated_kernelshap_coalitions(n, count, seed)
    if design == "shapley_kernel":
        masks = sample_kernelshap_coalitions(n, count, seed)
    elif design == "uniform":
        masks = sample_uniform_coalitions(n, count, seed)
    else:
        masks = leave_one_out_coalitions(n)
    return masks, np.ones(len(masks)), 0


def estimate_values(
    estimator: str,
    masks: np.ndarray,
    values: np.ndarray,
    v_empty: float,
    v_full: float,
    n_boot: int,
    seed: int,
    weights: np.ndarray | None = None,
    enumerated: int = 0,
) -> Valuation:
    """One value per player by `estimator` from the game's (masks, values), with bootstrap standard errors;
    `weights` and `enumerated` are a KernelSHAP design's (from `coalition_design`; other estimators take
    neither)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r} (known: {list(ESTIMATORS)})")
    if weights is not None and ESTIMATORS[estimator].weighted:
        fit = lambda m, v, w: kernelshap(m, v, v_empty, v_full, w)  # noqa: E731
        return with_bootstrap(fit, masks, values, n_boot, seed, weights, enumerated)
    fits = {
        "kernelshap": lambda m, v: kernelshap(m, v, v_empty, v_full),
        "banzhaf": banzhaf,
        "loo": lambda m, v: leave_one_out(m, v, v_full),
        "datamodel": datamodel,
    }
    if not ESTIMATORS[estimator].bootstrap:  # one coalition per value: resampling says nothing of its error
        point = fits[estimator](masks, values)
        return Valuation(point, np.full(len(point), np.nan))
    return with_bootstrap(fits[estimator], masks, values, n_boot, seed)


def removal_coalition(values: np.ndarray, fraction: float, side: str) -> np.ndarray:
    """All players but the top (or bottom) `fraction` by value: the counterfactual coalition."""
    count = int(round(fraction * len(values)))
    order = np.argsort(-values if side == "top" else values, kind="stable")
    mask = np.ones(len(values), dtype=bool)
    mask[order[:count]] = False
    return mask


def coalition_mask(
    name: str, coalitions: dict[str, np.ndarray], values: np.ndarray | None, fraction: float
) -> np.ndarray:
    """The contributors of a named coalition: fit{i}, dm{i} (the datamodel's own), heldout{i}, empty,
    full, or top-/bottom-{way}."""
    n = coalitions["fit"].shape[1]
    if name == "empty":
        return np.zeros(n, dtype=bool)
    if name == "full":
        return np.ones(n, dtype=bool)
    for kind in ("fit", "dm", "heldout"):
        if name.startswith(kind) and name[len(kind) :].isdigit():
            return coalitions[kind][int(name[len(kind) :])]
    side = name.split("-")[0]
    if side in ("top", "bottom") and values is not None:
        return removal_coalition(values, fraction, side)
    raise ValueError(f"unknown coalition {name!r}")
