"""Attribution scores (targets x train): TRAK / D-TRAK from gradient shards, and pixel similarity."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from diffattr.errors import InputError
from diffattr.store import read_arrays, read_npz

# A method's scores of target features (T, k) at a relative damping (None for an undamped kind): (T, N).
ScoreFn = Callable[[np.ndarray, float | None], np.ndarray]


def read_features(paths: Sequence[str | Path]) -> np.ndarray:
    """Concatenate the `features` arrays of gradient shards (for target sets, which are small)."""
    return np.concatenate([read_arrays(p, ["features"])["features"] for p in paths]).astype(np.float64)


class TrakScorer:
    """tau = Phi_test (Phi^T Phi + lam I)^-1 Phi^T, computed shard by shard.

    `dual` factors the N x N kernel Phi Phi^T (cheap when N < k); `primal` factors the k x k matrix
    Phi^T Phi. Both give the same scores (push-through identity). The damping is relative:
    lam = lambda_rel * mean diagonal of the kernel, so one grid suits any scale of gradients.
    Only one train shard is in memory at a time (two while assembling the dual kernel).
    """

    def __init__(self, train_shards: Sequence[str | Path], form: str = "auto") -> None:
        self.shards = [Path(p) for p in train_shards]
        if not self.shards:
            raise InputError("no train gradient shards given")
        self.sizes = [self._load(i).shape[0] for i in range(len(self.shards))]
        self.n = sum(self.sizes)
        self.k = self._load(0).shape[1]
        self.form = ("dual" if self.n < self.k else "primal") if form == "auto" else form
        if self.form not in ("dual", "primal"):
            raise InputError(f"config key 'attribute.form': unknown form {form!r}")
        matrix = self._dual_kernel() if self.form == "dual" else self._primal_kernel()
        self.trace = float(np.trace(matrix))
        self.eigvals, self.eigvecs = np.linalg.eigh(matrix)
        self.eigvals = np.clip(self.eigvals, 0.0, None)

    def _load(self, i: int) -> np.ndarray:
        return read_arrays(self.shards[i], ["features"])["features"].astype(np.float64)

    def _offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)])

    def _dual_kernel(self) -> np.ndarray:
        off = self._offsets()
        kernel = np.zeros((self.n, self.n))
        for i in range(len(self.shards)):
            a = self._load(i)
            for j in range(i, len(self.shards)):
                b = a if j == i else self._load(j)
                block = a @ b.T
                kernel[off[i] : off[i + 1], off[j] : off[j + 1]] = block
                kernel[off[j] : off[j + 1], off[i] : off[i + 1]] = block.T
        return kernel

    def _primal_kernel(self) -> np.ndarray:
        gram = np.zeros((self.k, self.k))
        for i in range(len(self.shards)):
            a = self._load(i)
            gram += a.T @ a
        return gram

    def damping(self, lambda_rel: float) -> float:
        """Absolute damping: lambda_rel times the mean squared norm of a train feature."""
        return lambda_rel * self.trace / self.n

    def scores(self, targets: np.ndarray, lambda_rel: float) -> np.ndarray:
        """Score matrix (T, N) for target features (T, k)."""
        inv = 1.0 / (self.eigvals + self.damping(lambda_rel))
        targets = np.asarray(targets, np.float64)
        off = self._offsets()
        if self.form == "dual":
            cross = np.zeros((len(targets), self.n))
            for i in range(len(self.shards)):
                cross[:, off[i] : off[i + 1]] = targets @ self._load(i).T
            return ((cross @ self.eigvecs) * inv) @ self.eigvecs.T
        weighted = ((targets @ self.eigvecs) * inv) @ self.eigvecs.T
        return np.concatenate([weighted @ self._load(i).T for i in range(len(self.shards))], axis=1)

    @cached_property
    def squared_coordinates(self) -> np.ndarray:
        """c_ij^2 (N, r): squared coordinate of train feature i along the kernel's eigenvector j.

        Dual form: Phi = V S^1/2 U^T, so c_ij^2 = V_ij^2 s_j; primal form: c_ij = phi_i . u_j.
        """
        if self.form == "dual":
            return self.eigvecs**2 * self.eigvals
        return np.concatenate([(self._load(i) @ self.eigvecs) ** 2 for i in range(len(self.shards))])

    def leverage(self, lambda_rel: float) -> np.ndarray:
        """h_i = phi_i^T (Phi^T Phi + lam I)^-1 phi_i of every train sample (N,), in [0, 1)."""
        return self.squared_coordinates @ (1.0 / (self.eigvals + self.damping(lambda_rel)))

    def influence_row_norms(self, lambda_rel: float) -> np.ndarray:
        """||row_i of Phi (Phi^T Phi + lam I)^-1|| of every train sample (N,): relative IF's divisor."""
        inv2 = 1.0 / (self.eigvals + self.damping(lambda_rel)) ** 2
        return np.sqrt(self.squared_coordinates @ inv2)

    def train_norms(self) -> np.ndarray:
        """||phi_i|| of every train sample (N,): renormalised IF's divisor."""
        return np.sqrt(self.squared_coordinates.sum(1))


def pixel_similarity(targets: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Cosine similarity of raw pixels in [-1, 1]: the similarity baseline of D-TRAK's tables."""

    def unit(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64) / 127.5 - 1.0
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)

    return unit(targets) @ unit(train).T


def ensemble_scores(
    members: Sequence[tuple[TrakScorer, np.ndarray]], lambda_rel: float | Sequence[float]
) -> np.ndarray:
    """Mean of the members' TRAK scores (T, N): each member is a scorer on one model's train features with
    that model's target features, at one damping for all or (a sequence) each member's own."""
    dampings = [lambda_rel] * len(members) if np.isscalar(lambda_rel) else list(lambda_rel)
    return np.mean(
        [scorer.scores(targets, lam) for (scorer, targets), lam in zip(members, dampings, strict=True)],
        axis=0,
    )


@dataclass
class GradientInputs:
    """What rule local_scores gives a method's scoring function: one featurizer's train shards (read, or
    factored by a TrakScorer, only when the method asks), the TRAK form, DAS's training residuals."""

    train_shards: Sequence[str | Path]
    form: str = "auto"
    residuals: str | Path | None = None

    @cached_property
    def scorer(self) -> TrakScorer:
        """The TRAK scorer of the train features (its kernel factored once)."""
        return TrakScorer(self.train_shards, self.form)

    @cached_property
    def train(self) -> np.ndarray:
        """The train features (N, k) in memory."""
        return read_features(self.train_shards)

    @cached_property
    def errors(self) -> np.ndarray:
        """The full model's errors on the training images at the featurizer's timesteps (N, timesteps)."""
        if self.residuals is None:
            raise InputError("this method needs the training residuals (rule das_residuals)")
        return read_npz(self.residuals)["errors"]

    def details(self) -> dict:
        """What the scores depended on besides the damping: the TRAK form, when the scorer was used."""
        return {"form": self.scorer.form} if "scorer" in self.__dict__ else {}
