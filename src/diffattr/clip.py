"""CLIP image embeddings (open_clip, from a local checkpoint) and the CLIP-similarity attribution baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffattr.errors import InputError

BATCH = 128


class ClipEmbedder:
    """L2-normalised open_clip image embeddings of images in [-1, 1]; grey images are repeated to RGB.

    `model` is an open_clip architecture name, `weights` a local checkpoint of it (`key` names it in
    errors). Nothing is downloaded.
    """

    def __init__(
        self,
        model: str,
        weights: str | Path | None,
        device: torch.device | str = "cpu",
        key: str = "clip.weights",
    ) -> None:
        import open_clip

        if not weights or not Path(weights).is_file():
            raise InputError(f"config key '{key}': file not found: {weights}")
        self.device = torch.device(device)
        self.model = open_clip.create_model(model, pretrained=str(weights), device=self.device).eval()
        size = self.model.visual.image_size
        self.size = size[0] if isinstance(size, tuple | list) else size
        cfg = self.model.visual.preprocess_cfg
        self.mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Embeddings (N, D) float64 with unit norm."""
        parts = []
        for start in range(0, len(images), BATCH):
            x = (images[start : start + BATCH].to(self.device).clamp(-1, 1) + 1) / 2
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
            emb = self.model.encode_image((x - self.mean) / self.std)
            parts.append((emb / emb.norm(dim=-1, keepdim=True)).cpu().numpy().astype(np.float64))
        return np.concatenate(parts)


def uint8_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, C, H, W) as float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1.0)


def clip_similarity(embedder: ClipEmbedder, targets: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Cosine similarity (targets x train) of CLIP image embeddings: D-TRAK's CLIP baseline."""
    return embedder(uint8_to_tensor(targets)) @ embedder(uint8_to_tensor(train)).T


def paired_cosine(embedder: ClipEmbedder, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CLIP cosine between matching uint8 images of a and b (the counterfactual's semantic distance)."""
    return np.sum(embedder(uint8_to_tensor(a)) * embedder(uint8_to_tensor(b)), axis=1)
