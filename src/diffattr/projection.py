"""Seeded random projections of long gradient vectors to k dimensions (Johnson-Lindenstrauss)."""

from __future__ import annotations

import math

import torch

from diffattr.errors import InputError

PROJECTIONS = ("gaussian", "rademacher", "sjlt")
DENSE = ("gaussian", "rademacher")


class RandomProjector:
    """Projects (B, P) rows with a P x k random matrix defined block by block from (seed, block index).

    The matrix is the same in every process, shard and call; it is kept in memory when it fits in
    `cache_bytes`, else regenerated block by block at each call (same numbers either way).
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        kind: str,
        seed: int,
        block_rows: int = 16384,
        cache_bytes: int = 2 << 30,
    ) -> None:
        if kind not in DENSE:
            raise InputError(f"unknown dense projection {kind!r}; known: {list(DENSE)}")
        self.dim_in, self.dim_out, self.kind, self.seed = dim_in, dim_out, kind, seed
        self.block_rows = block_rows
        self._blocks: list[torch.Tensor] | None = None
        if dim_in * dim_out * 4 <= cache_bytes:
            self._blocks = [self._block(i) for i in range(self.num_blocks)]

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.dim_in / self.block_rows)

    def _block(self, index: int) -> torch.Tensor:
        rows = min(self.block_rows, self.dim_in - index * self.block_rows)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        if self.kind == "gaussian":
            block = torch.randn(rows, self.dim_out, generator=generator)
        else:
            block = torch.randint(0, 2, (rows, self.dim_out), generator=generator).float().mul_(2).sub_(1)
        return block.div_(math.sqrt(self.dim_out))

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, P) -> (B, k) in float32."""
        if rows.shape[-1] != self.dim_in:
            raise ValueError(f"expected {self.dim_in} columns, got {rows.shape[-1]}")
        rows = rows.float().cpu()
        out = torch.zeros(rows.shape[0], self.dim_out)
        for i in range(self.num_blocks):
            block = self._blocks[i] if self._blocks is not None else self._block(i)
            out.addmm_(rows[:, i * self.block_rows : (i + 1) * self.block_rows], block)
        return out


class SparseProjector:
    """Sparse Johnson-Lindenstrauss transform (CountSketch with `sparsity` nonzeros per input coordinate).

    Each input coordinate is added, with a random sign, to `sparsity` random output coordinates:
    O(P * sparsity) per row instead of O(P * k), and the hash is drawn once per process from the seed.
    """

    def __init__(self, dim_in: int, dim_out: int, seed: int, sparsity: int = 1) -> None:
        self.dim_in, self.dim_out, self.sparsity = dim_in, dim_out, sparsity
        generator = torch.Generator().manual_seed(seed * 1_000_003 + 7)
        self.index = torch.randint(0, dim_out, (sparsity, dim_in), generator=generator)
        signs = torch.randint(0, 2, (sparsity, dim_in), generator=generator, dtype=torch.int8)
        self.sign = signs.float().mul_(2).sub_(1).div_(math.sqrt(sparsity))

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, P) -> (B, k) in float32."""
        if rows.shape[-1] != self.dim_in:
            raise ValueError(f"expected {self.dim_in} columns, got {rows.shape[-1]}")
        rows = rows.float()
        out = torch.zeros(rows.shape[0], self.dim_out, device=rows.device)
        for j in range(self.sparsity):
            out.index_add_(1, self.index[j].to(rows.device), rows * self.sign[j].to(rows.device))
        return out.cpu()


def make_projection(dim_in: int, dim_out: int, kind: str, seed: int) -> RandomProjector | SparseProjector:
    """The projector named by a featurizer's `projection` key."""
    if kind == "sjlt":
        return SparseProjector(dim_in, dim_out, seed)
    return RandomProjector(dim_in, dim_out, kind, seed)
