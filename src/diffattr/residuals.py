"""DAS's training residuals: the full model's error on each training image at each featurizer timestep."""

from __future__ import annotations

import numpy as np
import torch

from diffattr.models import PixelDiffusion
from diffattr.outputs import fixed_noise


@torch.no_grad()
def training_errors(
    model: PixelDiffusion, images: torch.Tensor, timesteps: np.ndarray, noise_seed: int, batch_size: int
) -> np.ndarray:
    """e_it = mean over pixels of (eps_theta(x_t) - eps)^2 for image i at timestep t: (N, K) float64.

    The noise at t is the featurizer's fixed draw (seed noise_seed * 1000 + t), shared by all images.
    """
    model.unet.eval()
    x0_all = model.encode(images.to(model.device))
    errors = np.zeros((len(images), len(timesteps)))
    for k, t in enumerate(timesteps):
        noise = fixed_noise(noise_seed, int(t), tuple(x0_all.shape[1:])).to(model.device)
        for start in range(0, len(x0_all), batch_size):
            x0 = x0_all[start : start + batch_size]
            tt = torch.full((len(x0),), int(t), device=model.device, dtype=torch.long)
            eps = noise.expand_as(x0)
            pred = model.predict_noise(model.add_noise(x0, eps, tt), tt)
            errors[start : start + len(x0), k] = (pred - eps).flatten(1).pow(2).mean(1).double().cpu().numpy()
    return errors
