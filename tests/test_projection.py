"""Random projections preserve inner products within JL bounds and are the same in every call."""

import numpy as np
import pytest
import torch

from diffattr.errors import InputError
from diffattr.projection import RandomProjector, SparseProjector, make_projection


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "sjlt"])
def test_inner_products_within_jl_bounds(kind):
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5000, generator=rng)
    k = 2048
    projector = (
        SparseProjector(5000, k, seed=1)
        if kind == "sjlt"
        else RandomProjector(5000, k, kind, seed=1, block_rows=1024)
    )
    projected = projector.project(x)
    exact = x @ x.T
    approx = projected @ projected.T
    norms = x.norm(dim=1)
    # |<Px,Py> - <x,y>| <= eps ||x|| ||y|| with eps ~ a few / sqrt(k) for every pair.
    err = (approx - exact).abs() / (norms[:, None] * norms[None, :])
    assert float(err.max()) < 5 / np.sqrt(k)
    assert float(err.mean()) < 1.5 / np.sqrt(k)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_same_matrix_across_calls_shards_and_cache(kind):
    x = torch.randn(9, 3000, generator=torch.Generator().manual_seed(2))
    cached = RandomProjector(3000, 64, kind, seed=5, block_rows=700)
    streamed = RandomProjector(3000, 64, kind, seed=5, block_rows=700, cache_bytes=0)
    assert cached._blocks is not None and streamed._blocks is None
    whole = cached.project(x)
    torch.testing.assert_close(streamed.project(x), whole)
    torch.testing.assert_close(torch.cat([cached.project(x[:4]), streamed.project(x[4:])]), whole)
    other_seed = RandomProjector(3000, 64, kind, seed=6, block_rows=700).project(x)
    assert not torch.allclose(other_seed, whole)


def test_sparse_projection_is_seeded_and_shard_independent():
    x = torch.randn(7, 4000, generator=torch.Generator().manual_seed(4))
    a, b = make_projection(4000, 256, "sjlt", 9), make_projection(4000, 256, "sjlt", 9)
    whole = a.project(x)
    torch.testing.assert_close(torch.cat([b.project(x[:3]), a.project(x[3:])]), whole)
    assert not torch.allclose(make_projection(4000, 256, "sjlt", 10).project(x), whole)
    two = SparseProjector(4000, 256, seed=9, sparsity=2)
    exact = x @ x.T
    assert float(((two.project(x) @ two.project(x).T - exact).abs() / exact.diag().max()).max()) < 0.5


def test_unknown_projection_is_an_input_error():
    with pytest.raises(InputError, match="unknown dense projection 'fourier'"):
        RandomProjector(10, 4, "fourier", seed=0)
