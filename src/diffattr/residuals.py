"""DAS's training residuals: the full model's error on each training image at each featurizer timestep."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from diffattr.families.base import DiffusionModel, conditioner, encode_all
from diffattr.outputs import fixed_noise


@torch.no_grad()
def training_errors(
    model: DiffusionModel,
    images: torch.Tensor,
    timesteps: np.ndarray,
    noise_seed: int,
    batch_size: int,
    captions: Sequence[str] | None = None,
) -> np.ndarray:
    """e_it = mean over pixels of (eps_theta(x_t) - eps)^2 for image i at timestep t: (N, K) float64.

    The noise at t is the featurizer's fixed draw (seed noise_seed * 1000 + t), shared by all images;
    conditional families see each image's caption.
    """
    model.unet.eval()
    x0_all = encode_all(model, images.to(model.device), batch_size)
    cond_of = conditioner(model, captions)
    errors = np.zeros((len(images), len(timesteps)))
    for k, t in enumerate(timesteps):
        noise = fixed_noise(noise_seed, int(t), tuple(x0_all.shape[1:])).to(model.device)
        for start in range(0, len(x0_all), batch_size):
            x0 = x0_all[start : start + batch_size]
            tt = torch.full((len(x0),), int(t), device=model.device, dtype=torch.long)
            eps = noise.expand_as(x0)
            cond = cond_of(torch.arange(start, start + len(x0)))
            pred = model.predict_noise(model.add_noise(x0, eps, tt), tt, cond)
            errors[start : start + len(x0), k] = (pred - eps).flatten(1).pow(2).mean(1).double().cpu().numpy()
    return errors
