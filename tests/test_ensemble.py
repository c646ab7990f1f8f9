"""Ensembles of TRAK / D-TRAK: the score is the mean of the members' scores, each computed directly."""

import numpy as np

from diffattr.attribution import TrakScorer, ensemble_scores
from tests.test_attribution import write_shards


def direct_trak(phi: np.ndarray, targets: np.ndarray, lambda_rel: float) -> np.ndarray:
    """tau = Phi_t (Phi^T Phi + lam I)^-1 Phi^T with lam relative to the mean squared norm of phi_i."""
    lam = lambda_rel * np.mean(np.sum(phi**2, axis=1))
    return targets @ np.linalg.solve(phi.T @ phi + lam * np.eye(phi.shape[1]), phi.T)


def test_ensemble_is_the_mean_of_member_scores(tmp_path):
    rng = np.random.default_rng(0)
    members, expected = [], []
    for s in range(3):
        phi = rng.normal(size=(12, 5)).astype(np.float32).astype(np.float64)
        targets = rng.normal(size=(4, 5))
        scorer = TrakScorer(write_shards(tmp_path / f"member{s}", phi, [5, 7]))
        members.append((scorer, targets))
        expected.append(direct_trak(phi, targets, 0.1))
    np.testing.assert_allclose(ensemble_scores(members, 0.1), np.mean(expected, axis=0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ensemble_scores(members[:1], 0.1), expected[0], rtol=1e-6, atol=1e-8)


def test_members_at_their_own_dampings_average_the_direct_scores(tmp_path):
    """D-TRAK's ensembles over subsets: each member scored at its own damping, the scores averaged."""
    rng = np.random.default_rng(1)
    members, expected = [], []
    for s, lam in enumerate([0.01, 1.0]):
        phi = rng.normal(size=(9, 4))
        targets = rng.normal(size=(3, 4))
        members.append((TrakScorer(write_shards(tmp_path / f"member{s}", phi, [4, 5])), targets))
        expected.append(direct_trak(phi, targets, lam))
    got = ensemble_scores(members, [0.01, 1.0])
    np.testing.assert_allclose(got, np.mean(expected, axis=0), rtol=1e-6, atol=1e-8)
    assert not np.allclose(got, ensemble_scores(members, 0.01))  # the dampings matter
