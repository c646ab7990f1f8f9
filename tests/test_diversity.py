"""Diversity (Lu et al.): Ward clusters of reference embeddings, nearest-centroid assignment, entropy in
bits, on cases whose answer is known."""

import numpy as np
import pytest

from diffattr.diversity import cluster_entropy, diversity, nearest_cluster, ward_clusters
from diffattr.errors import InputError


def blobs(k: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k well separated Gaussian blobs in 5 dimensions, `per` points each, and each point's blob."""
    rng = np.random.default_rng(seed)
    centres = np.eye(5, k).T * 50 if k <= 5 else rng.normal(scale=50, size=(k, 5))
    which = np.repeat(np.arange(k), per)
    return centres[which] + rng.normal(scale=0.5, size=(k * per, 5)), which


def test_ward_recovers_separated_blobs_and_assignment_follows_them():
    reference, which = blobs(20, 10, 0)
    labels = ward_clusters(reference, 20)
    # the same partition up to renaming: each blob is one cluster
    assert len({(w, c) for w, c in zip(which, labels, strict=True)}) == 20
    new, new_which = blobs(20, 3, 0)
    assigned = nearest_cluster(new + 0.1, reference, labels)
    mapping = dict(zip(which, labels, strict=True))
    assert (assigned == np.array([mapping[w] for w in new_which])).all()


def test_entropy_of_known_proportions():
    assert cluster_entropy(np.zeros(10, int), 20) == 0.0
    assert cluster_entropy(np.array([0, 1] * 5), 20) == pytest.approx(1.0)
    assert cluster_entropy(np.arange(20).repeat(3), 20) == pytest.approx(np.log2(20))
    assert cluster_entropy(np.array([0, 0, 0, 1]), 4) == pytest.approx(
        -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    )


def test_diversity_of_images_from_one_two_and_all_clusters():
    reference, which = blobs(20, 10, 1)
    assert diversity(reference[which == 3], reference) == pytest.approx(0.0)
    assert diversity(reference[(which == 3) | (which == 7)], reference) == pytest.approx(1.0)
    assert diversity(reference, reference) == pytest.approx(np.log2(20))
    with pytest.raises(InputError, match="clusters"):
        diversity(reference[:3], reference[:5], k=20)
