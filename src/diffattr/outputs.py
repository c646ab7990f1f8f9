"""Output functions of a diffusion model at (x0, t, noise), and the measured loss used as LDS ground truth."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from diffattr.errors import InputError
from diffattr.families.base import DiffusionModel, conditioner, encode_all

OutputFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def _elbo_weight(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """beta_t / (2 alpha_t (1 - abar_t)): the ELBO's weight on the epsilon-MSE at timestep t."""
    abar = alphas_cumprod.to(t.device)[t]
    abar_prev = torch.where(t > 0, alphas_cumprod.to(t.device)[(t - 1).clamp(min=0)], torch.ones_like(abar))
    alpha = abar / abar_prev
    return (1 - alpha) / (2 * alpha * (1 - abar)).clamp(min=1e-12)


# Each maps (eps_pred, noise, t, alphas_cumprod) to one value per batch element.
OUTPUT_FUNCTIONS: dict[str, OutputFn] = {
    "loss": lambda e, n, t, a: _flat(e - n).pow(2).mean(1),
    "squared_norm": lambda e, n, t, a: _flat(e).pow(2).mean(1),
    "mean": lambda e, n, t, a: _flat(e).mean(1),
    "l1": lambda e, n, t, a: _flat(e).abs().sum(1),
    "l2": lambda e, n, t, a: _flat(e).norm(dim=1),
    "linf": lambda e, n, t, a: _flat(e).abs().amax(1),
    "elbo": lambda e, n, t, a: _elbo_weight(a, t) * _flat(e - n).pow(2).mean(1),
}


def output_function(name: str) -> OutputFn:
    """Look up an output function by its config name."""
    if name not in OUTPUT_FUNCTIONS:
        raise InputError(f"unknown output function {name!r}; known: {sorted(OUTPUT_FUNCTIONS)}")
    return OUTPUT_FUNCTIONS[name]


def evenly_spaced_timesteps(count: int, num_train_timesteps: int) -> np.ndarray:
    """t = 0, T/K, 2T/K, ...: the K timesteps of D-TRAK's featurizer and of the LDS ground truth."""
    return (np.arange(count) * num_train_timesteps // count).astype(np.int64)


def fixed_noise(noise_seed: int, t: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The noise at timestep t for noise seed e (seed e * 1000 + t), shared by all samples and models."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(noise_seed * 1000 + int(t)))


@torch.no_grad()
def per_timestep_losses(
    model: DiffusionModel,
    images: torch.Tensor,
    timesteps: np.ndarray,
    noise_seed: int,
    batch_size: int,
    captions: Sequence[str] | None = None,
) -> np.ndarray:
    """e_it = mean over pixels of (eps_theta(x_t) - eps)^2 for image i at timestep t: (N, K) float64.

    The noise at t is the fixed draw of `noise_seed` (seed noise_seed * 1000 + t), shared by all images;
    conditional families see each image's caption. DAS's training residuals are exactly this.
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
            errors[start : start + len(x0), k] = _flat(pred - eps).pow(2).mean(1).double().cpu().numpy()
    return errors


def measure_loss(
    model: DiffusionModel,
    images: torch.Tensor,
    timesteps: np.ndarray,
    noise_seeds: list[int],
    batch_size: int,
    captions: Sequence[str] | None = None,
) -> np.ndarray:
    """Diffusion loss of every image (given its caption, for conditional families) averaged over the
    given timesteps and noise seeds: shape (N,), the LDS ground truth."""
    total = sum(
        per_timestep_losses(model, images, timesteps, e, batch_size, captions).sum(1) for e in noise_seeds
    )
    return total / (len(noise_seeds) * len(timesteps))
