"""Generate images with DDIM from a trained model; every image has its own seed, and a text-conditioned
model may be guided (classifier-free guidance against the empty prompt)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler

from diffattr.errors import InputError
from diffattr.families.base import DiffusionModel


def initial_noise(seeds: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """x_T for each image from its own seed, so an image does not depend on its batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def sample_prompts(model: DiffusionModel, count: int) -> np.ndarray | None:
    """The prompt of each generated image: image i gets the model's prompt i mod their number."""
    prompts = model.prompts
    return (
        None if prompts is None else np.array([prompts[i % len(prompts)] for i in range(count)], dtype=object)
    )


def is_guided(guidance_scale: float | None) -> bool:
    """Whether a guidance scale asks for guidance: null and 1 sample from the conditional model alone."""
    return guidance_scale is not None and guidance_scale != 1


def guided_noise(
    model: DiffusionModel,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """Classifier-free guidance: eps_uncond + s (eps_cond - eps_uncond), both branches in one batch as
    diffusers' StableDiffusionPipeline runs them; `uncond` is the empty prompt's conditioning."""
    n = len(x)
    cond, uncond = (c.expand(n, *c.shape[1:]) if len(c) == 1 else c for c in (cond, uncond))
    both = model.predict_noise(torch.cat([x, x]), torch.cat([t, t]), torch.cat([uncond, cond]))
    eps_uncond, eps_cond = both.chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


@torch.no_grad()
def ddim_sample(
    model: DiffusionModel,
    seeds: np.ndarray,
    num_inference_steps: int,
    eta: float,
    batch_size: int,
    guidance_scale: float | None = None,
) -> np.ndarray:
    """Images (N, C, H, W) as uint8, one per seed (and per prompt of `sample_prompts` for conditional
    families); with eta 0 the sampler is deterministic. A `guidance_scale` other than None or 1 guides a
    conditional model (see `guided_noise`)."""
    return _ddim_run(model, seeds, num_inference_steps, eta, batch_size, False, guidance_scale)[0]


@torch.no_grad()
def ddim_trajectory(
    model: DiffusionModel,
    seeds: np.ndarray,
    num_inference_steps: int,
    eta: float,
    batch_size: int,
    guidance_scale: float | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The images of `ddim_sample` and the trajectory the run visited (Journey-TRAK's targets).

    The trajectory holds `latents` (N, S, *latent): the x_t fed to each of the S DDIM steps;
    `predicted_noise` (N, S, *latent): the eps each step used (guided, when guidance is on; Journey-TRAK's
    x0_hat comes from both); `final` (N, *latent): the last step's x_0 before decoding; `timesteps`
    (S,): the t of each step.
    """
    return _ddim_run(model, seeds, num_inference_steps, eta, batch_size, True, guidance_scale)


def _ddim_run(
    model: DiffusionModel,
    seeds: np.ndarray,
    num_inference_steps: int,
    eta: float,
    batch_size: int,
    keep_trajectory: bool,
    guidance_scale: float | None,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """One DDIM run over all seeds in batches; the visited x_t and eps kept when asked."""
    model.unet.eval()
    ddim = DDIMScheduler.from_config(model.scheduler.config)
    ddim.set_timesteps(num_inference_steps)
    prompts = sample_prompts(model, len(seeds))
    guided = is_guided(guidance_scale)
    if guided and prompts is None:
        raise InputError(
            f"guidance scale {guidance_scale}: classifier-free guidance needs a text-conditioned model "
            f"(family lora), not a {model.family} one"
        )
    uncond = model.condition([""]) if guided else None
    out, latents, noises, finals = [], [], [], []
    for start in range(0, len(seeds), batch_size):
        batch_seeds = seeds[start : start + batch_size]
        x = initial_noise(batch_seeds, model.latent_shape).to(model.device)
        cond = None if prompts is None else model.condition(list(prompts[start : start + batch_size]))
        generator = torch.Generator().manual_seed(int(batch_seeds[0]))
        visited, predicted = [], []
        for t in ddim.timesteps:
            t_batch = t.to(model.device).expand(len(x))
            if guided:
                eps = guided_noise(model, x, t_batch, cond, uncond, guidance_scale)
            else:
                eps = model.predict_noise(x, t_batch, cond)
            if keep_trajectory:
                visited.append(x.float().cpu())
                predicted.append(eps.float().cpu())
            x = ddim.step(eps, t, x, eta=eta, generator=generator).prev_sample
        out.append(to_uint8(model.decode(x)))
        if keep_trajectory:
            latents.append(torch.stack(visited, 1).numpy())
            noises.append(torch.stack(predicted, 1).numpy())
            finals.append(x.float().cpu().numpy())
    if not keep_trajectory:
        return np.concatenate(out), None
    trajectory = {
        "latents": np.concatenate(latents),
        "predicted_noise": np.concatenate(noises),
        "final": np.concatenate(finals),
        "timesteps": ddim.timesteps.cpu().numpy().astype(np.int64),
    }
    return np.concatenate(out), trajectory


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] floats to uint8 pixels, as an image file would store them."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
