"""TRAK scores: dual and primal forms agree with a direct numpy computation, shard by shard."""

import numpy as np
import pytest

from diffattr.attribution import TrakScorer, pixel_similarity
from diffattr.store import write_arrays


def write_shards(tmp_path, phi, sizes):
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths, start = [], 0
    for i, size in enumerate(sizes):
        path = tmp_path / f"{i}.zarr"
        write_arrays(path, {"features": phi[start : start + size].astype(np.float32)})
        paths.append(path)
        start += size
    return paths


@pytest.mark.parametrize("n,k", [(12, 30), (40, 8)])
def test_dual_and_primal_match_direct(tmp_path, n, k):
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(n, k)).astype(np.float32).astype(np.float64)
    targets = rng.normal(size=(5, k))
    paths = write_shards(tmp_path, phi, [n // 3, n // 3, n - 2 * (n // 3)])
    lam_rel = 0.1
    lam = lam_rel * np.trace(phi @ phi.T) / n
    direct = targets @ np.linalg.inv(phi.T @ phi + lam * np.eye(k)) @ phi.T
    dual = TrakScorer(paths, "dual").scores(targets, lam_rel)
    primal = TrakScorer(paths, "primal").scores(targets, lam_rel)
    np.testing.assert_allclose(dual, direct, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(primal, direct, rtol=1e-6, atol=1e-9)
    assert TrakScorer(paths).form == ("dual" if n < k else "primal")


def test_pixel_similarity_is_cosine_in_signed_pixel_space():
    a = np.array([[[[0, 255]]], [[[255, 255]]]], dtype=np.uint8)
    scores = pixel_similarity(a, a)
    np.testing.assert_allclose(np.diag(scores), 1.0)
    np.testing.assert_allclose(scores[0, 1], 0.0, atol=1e-12)  # (-1, 1) . (1, 1) = 0


def test_sparse_and_dense_projections_give_the_same_lds(tmp_path):
    """On a planted linear datamodel, TRAK on sjlt features scores as well as on Gaussian features."""
    import torch

    from diffattr.metrics import bootstrap_ci, lds_per_target
    from diffattr.projection import make_projection

    rng = np.random.default_rng(0)
    n, p, k = 60, 4000, 512
    grads = rng.normal(size=(n, p)) * rng.gamma(1.0, size=p)  # uneven coordinate scales, like gradients
    targets = grads[:20] + 0.5 * rng.normal(size=(20, p))
    exact = targets @ np.linalg.solve(grads.T @ grads + 10 * np.eye(p), grads.T)
    masks = rng.random((80, n)) < 0.5
    outputs = -(masks @ exact.T) + 0.05 * rng.normal(size=(80, 20)) * np.abs(masks @ exact.T).std()
    lds = {}
    for kind in ("gaussian", "sjlt"):
        projector = make_projection(p, k, kind, seed=1)
        phi = projector.project(torch.from_numpy(grads).float()).numpy()
        phi_t = projector.project(torch.from_numpy(targets).float()).numpy()
        paths = write_shards(tmp_path / kind, phi, [30, 30])
        lds[kind] = lds_per_target(TrakScorer(paths).scores(phi_t, 0.01), masks, outputs)
    low, high = bootstrap_ci(lds["gaussian"], 500, 0.95, 0)
    assert low <= lds["sjlt"].mean() <= high
    assert lds["gaussian"].mean() > 0.5
