"""Diversity of generated images as Lu et al. define it for CelebA-HQ: cluster the reference images'
embeddings into k clusters (Ward), assign every generated image to the nearest cluster, and take the
entropy (bits) of the cluster proportions. Their embedding network is BLIP-VQA's vision model; any
local network keeps the definition (here: the property's feature extractor, open_clip's image encoder,
the Inception torchscript or the demo's classifier)."""

from __future__ import annotations

import numpy as np

from diffattr.errors import InputError


def ward_clusters(reference: np.ndarray, k: int) -> np.ndarray:
    """Cluster labels 0..k-1 of the reference embeddings by Ward's agglomerative clustering."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(reference) < k:
        raise InputError(
            f"config key 'shapley.property.clusters': {k} clusters need at least {k} reference images "
            f"(have {len(reference)})"
        )
    labels = fcluster(linkage(np.asarray(reference, np.float64), method="ward"), k, criterion="maxclust")
    return np.unique(labels, return_inverse=True)[1]


def nearest_cluster(embeddings: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Index of the cluster whose centroid (mean reference embedding) is nearest to each embedding."""
    centroids = np.stack([reference[labels == c].mean(0) for c in range(labels.max() + 1)])
    distances = ((embeddings[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    return distances.argmin(1)


def cluster_entropy(assigned: np.ndarray, k: int) -> float:
    """Entropy in bits of the proportions of images per cluster (0 = one cluster, log2 k = uniform)."""
    counts = np.bincount(assigned, minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def diversity(embeddings: np.ndarray, reference: np.ndarray, k: int = 20) -> float:
    """Entropy (bits) of generated images' proportions over k Ward clusters of the reference embeddings."""
    labels = ward_clusters(reference, k)
    return cluster_entropy(
        nearest_cluster(np.asarray(embeddings, np.float64), reference, labels), labels.max() + 1
    )
