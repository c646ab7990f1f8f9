"""Diversity of generated images as Lu et al. define it for CelebA-HQ: cluster the reference images'
embeddings into k clusters (Ward), assign every generated image to the nearest cluster, and take the
entropy (bits) of the cluster proportions. Their embedding network is BLIP-VQA's vision model; any
local network keeps the definition (here: the property's feature extractor, open_clip's image encoder,
the Inception torchscript or the demo's classifier).

Two distances: `euclidean` (Ward on Euclidean distances, the nearest centroid) and `similarity`, the one
of the authors' code: Ward on max(S) - S, S the reference embeddings' dot products, and each image in
the cluster of the smallest mean max(S) - e.r over its members, i.e. the largest dot product with the
cluster's centroid."""

from __future__ import annotations

import numpy as np

from diffattr.errors import InputError


def ward_clusters(reference: np.ndarray, k: int, distance: str = "euclidean") -> np.ndarray:
    """Cluster labels 0..k-1 of the reference embeddings by Ward's agglomerative clustering, on Euclidean
    distances or on the authors' dissimilarity max(S) - S of the dot products S."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if len(reference) < k:
        raise InputError(
            f"config key 'shapley.property.clusters': {k} clusters need at least {k} reference images "
            f"(have {len(reference)})"
        )
    reference = np.asarray(reference, np.float64)
    if distance == "similarity":
        sim = reference @ reference.T
        dissimilarity = sim.max() - (sim + sim.T) / 2
        np.fill_diagonal(dissimilarity, 0)
        tree = linkage(squareform(dissimilarity), method="ward")
    else:
        tree = linkage(reference, method="ward")
    return np.unique(fcluster(tree, k, criterion="maxclust"), return_inverse=True)[1]


def nearest_cluster(
    embeddings: np.ndarray, reference: np.ndarray, labels: np.ndarray, distance: str = "euclidean"
) -> np.ndarray:
    """Index of each embedding's cluster: the nearest centroid (mean reference embedding), or under
    `similarity` the centroid of the largest dot product."""
    centroids = np.stack([reference[labels == c].mean(0) for c in range(labels.max() + 1)])
    if distance == "similarity":
        return (embeddings @ centroids.T).argmax(1)
    distances = ((embeddings[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    return distances.argmin(1)


def cluster_entropy(assigned: np.ndarray, k: int) -> float:
    """Entropy in bits of the proportions of images per cluster (0 = one cluster, log2 k = uniform)."""
    counts = np.bincount(assigned, minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def diversity(
    embeddings: np.ndarray, reference: np.ndarray, k: int = 20, distance: str = "euclidean"
) -> float:
    """Entropy (bits) of generated images' proportions over k Ward clusters of the reference embeddings."""
    reference = np.asarray(reference, np.float64)
    labels = ward_clusters(reference, k, distance)
    assigned = nearest_cluster(np.asarray(embeddings, np.float64), reference, labels, distance)
    return cluster_entropy(assigned, labels.max() + 1)
