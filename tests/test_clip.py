"""CLIP similarity and the counterfactual's CLIP cosine on a tiny randomly initialised open_clip model."""

import numpy as np
import pytest
import torch

from diffattr.clip import ClipEmbedder, clip_similarity, paired_cosine
from diffattr.errors import InputError


def test_clip_similarity_is_the_cosine_of_the_models_image_embeddings(tiny_clip):
    import open_clip

    name, weights = tiny_clip
    embedder = ClipEmbedder(name, weights)
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 256, size=(3, 1, 8, 8), dtype=np.uint8)
    train = rng.integers(0, 256, size=(5, 1, 8, 8), dtype=np.uint8)
    scores = clip_similarity(embedder, targets, train)

    model = open_clip.create_model(name, pretrained=str(weights)).eval()
    mean = torch.tensor(model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)

    def direct(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).float().div(255).repeat(1, 3, 1, 1)
        x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False)
        with torch.no_grad():
            emb = model.encode_image((x - mean) / std).double().numpy()
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)

    np.testing.assert_allclose(scores, direct(targets) @ direct(train).T, atol=1e-5)
    assert scores.shape == (3, 5) and np.all(np.abs(scores) <= 1 + 1e-9)
    np.testing.assert_allclose(paired_cosine(embedder, train, train), 1.0, atol=1e-6)
    np.testing.assert_allclose(paired_cosine(embedder, targets, train[:3]), np.diag(scores), atol=1e-6)


def test_missing_clip_weights_name_the_key(tmp_path):
    with pytest.raises(InputError, match="clip.weights"):
        ClipEmbedder("ViT-B-32", tmp_path / "missing.pt")
    with pytest.raises(InputError, match="clip.weights"):
        ClipEmbedder("ViT-B-32", None)
