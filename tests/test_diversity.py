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


def naive_ward(d: np.ndarray, k: int) -> set[frozenset[int]]:
    """Ward's agglomeration on a dissimilarity matrix by hand: merge the closest pair until k clusters
    remain, updating distances by the Lance-Williams formula for Ward on (unsquared) distances."""
    clusters = {i: frozenset([i]) for i in range(len(d))}
    dist = {frozenset([i, j]): d[i, j] for i in range(len(d)) for j in range(i)}
    while len(clusters) > k:
        a, b = min(dist, key=dist.get)
        na, nb, dab = len(clusters[a]), len(clusters[b]), dist[frozenset([a, b])]
        merged = max(clusters) + 1
        for c in set(clusters) - {a, b}:
            nc, total = len(clusters[c]), na + nb + len(clusters[c])
            dac, dbc = dist.pop(frozenset([a, c])), dist.pop(frozenset([b, c]))
            squared = ((na + nc) * dac**2 + (nb + nc) * dbc**2 - nc * dab**2) / total
            dist[frozenset([merged, c])] = np.sqrt(squared)
        del dist[frozenset([a, b])]
        clusters[merged] = clusters.pop(a) | clusters.pop(b)
    return set(clusters.values())


def test_similarity_diversity_follows_the_authors_dissimilarity_ward_and_mean_assignment():
    """`similarity`: Ward on max(S) - S of the reference dot products (by hand above), each image in the
    cluster of the smallest mean max(S) - e.r over its members, entropy in bits; on raw, unnormalised
    embeddings it partitions differently from Euclidean Ward for some draws."""
    differs = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        reference, generated = rng.normal(size=(12, 6)) + 1, rng.normal(size=(10, 6)) + 1
        sim = reference @ reference.T
        dissimilarity = sim.max() - sim
        np.fill_diagonal(dissimilarity, 0)
        by_hand = naive_ward(dissimilarity, 4)
        labels = ward_clusters(reference, 4, "similarity")
        assert {frozenset(np.flatnonzero(labels == c).tolist()) for c in range(4)} == by_hand
        groups = sorted(by_hand, key=min)
        mean_distance = [
            [np.mean([sim.max() - e @ reference[i] for i in g]) for g in groups] for e in generated
        ]
        counts = np.bincount(np.argmin(mean_distance, axis=1), minlength=4)
        p = counts[counts > 0] / counts.sum()
        expected = float(-(p * np.log2(p)).sum())
        assert diversity(generated, reference, 4, "similarity") == pytest.approx(expected)
        euclidean = ward_clusters(reference, 4)
        differs += {frozenset(np.flatnonzero(euclidean == c).tolist()) for c in range(4)} != by_hand
    assert differs > 0
