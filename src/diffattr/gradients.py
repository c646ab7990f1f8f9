"""Featurize: per-sample gradients of an output function, averaged over K timesteps, randomly projected."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from diffattr.errors import InputError
from diffattr.families.base import DiffusionModel
from diffattr.outputs import evenly_spaced_timesteps, fixed_noise, output_function
from diffattr.projection import RandomProjector, SparseProjector, make_projection
from diffattr.training_draws import TrainingDraws

log = logging.getLogger(__name__)
# Unconditional samples go through vmap together, floor(256 / K) at a time (about 256 sample-timesteps
# per forward; the demo UNet at K = 10 on one thread reached 60% of its training-step throughput with
# 8 samples, 70% with 32, 32% one by one), as long as their per-sample gradients hold at most 2^26
# entries (the paper UNet goes one by one).
SAMPLE_TIMESTEPS, MAX_GRADIENT_ENTRIES = 256, 2**26


@dataclass(frozen=True)
class FeaturizerSpec:
    """One featurizer of the config: which output, how many timesteps, which projection."""

    output: str
    timesteps: int
    dim: int
    projection: str
    seed: int
    normalize_timesteps: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> FeaturizerSpec:
        return cls(
            cfg["output"],
            cfg["timesteps"],
            cfg["dim"],
            cfg["projection"],
            cfg["seed"],
            cfg.get("normalize_timesteps", False),
        )


def num_parameters(model: DiffusionModel) -> int:
    return sum(p.numel() for p in model.trainable_parameters())


def make_projector(model: DiffusionModel, spec: FeaturizerSpec) -> RandomProjector | SparseProjector:
    return make_projection(num_parameters(model), spec.dim, spec.projection, spec.seed)


class TimestepAveragedGradient:
    """g_i = grad_theta (1/K) sum_k f(eps_theta(x_t_k), noise_k, t_k) for one sample x_i.

    All K timesteps of a sample go through the network as one batch, with the noise of each
    timestep fixed (seed = noise_seed * 1000 + t) and shared by every sample, train or target.
    When K is too small a batch to use the hardware, `samples` unconditional samples at a time go
    through `batch`: vmap over samples of that same batched-timestep gradient.
    """

    def __init__(
        self,
        model: DiffusionModel,
        spec: FeaturizerSpec,
        noise_seed: int = 0,
        timestep_batch: int = 256,
        samples: int | None = None,
    ) -> None:
        self.model, self.spec, self.timestep_batch = model, spec, timestep_batch
        self.fn = output_function(spec.output)
        self.params = model.trainable_parameters()
        num_train = model.scheduler.config.num_train_timesteps
        self.timesteps = torch.from_numpy(evenly_spaced_timesteps(spec.timesteps, num_train))
        shape = model.latent_shape
        self.noise = torch.stack([fixed_noise(noise_seed, t, shape) for t in self.timesteps.tolist()])
        self.alphas_cumprod = model.scheduler.alphas_cumprod
        if samples is None:
            fits = MAX_GRADIENT_ENTRIES // max(1, sum(p.numel() for p in self.params))
            samples = min(SAMPLE_TIMESTEPS // spec.timesteps, fits)
            if spec.normalize_timesteps:  # each of a sample's K timesteps holds its own gradient
                samples = min(samples, fits // spec.timesteps)
        self.samples = 1 if model.prompts is not None else max(1, samples)

    def _functional_weights(self) -> tuple[torch.nn.Module, list[str], dict[str, torch.Tensor]]:
        """The denoiser module for torch.func, the trainable weights' names (the order of the flat
        gradient) and the detached weights by name."""
        denoiser = _Denoiser(self.model)
        name_of = {id(p): n for n, p in denoiser.named_parameters()}
        names = [name_of[id(p)] for p in self.params]
        return denoiser, names, {name: p.detach() for name, p in zip(names, self.params, strict=True)}

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """The flat gradients (B, P) of B unconditional images: vmap over samples of the gradient of
        each sample's timestep-batched output, K timesteps x B samples per forward (timestep-normalised:
        vmap over the B x K (sample, timestep) lanes, each gradient scaled to unit norm, then averaged)."""
        x0 = self.model.encode(images.to(self.model.device))
        b, k = len(x0), len(self.timesteps)
        noise = self.noise.to(x0.device).repeat(b, *[1] * (self.noise.dim() - 1))
        timesteps = self.timesteps.to(x0.device).repeat(b)
        x_t = self.model.add_noise(x0.repeat_interleave(k, 0), noise, timesteps)
        if self.spec.normalize_timesteps:
            return self.lane_gradients(x_t, noise, timesteps, unit=True).view(b, k, -1).mean(1)
        return self.given(x_t.view(b, k, *x0.shape[1:]), noise.view(b, k, *x0.shape[1:]), self.timesteps)

    def given(self, x_t: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The flat gradients (B, P) of grad_theta (1/K) sum_k f(eps_theta(x_t[b, k], t_k), noise[b, k], t_k)
        at given points: x_t and noise (B, K, *latent), timesteps (K,) shared by the B unconditional
        samples or (B, K) per sample (`batch` builds them by noising x0; Journey-TRAK passes a sampling
        trajectory; EK-FAC each sample's random draws)."""
        device = self.model.device
        denoiser, names, weights = self._functional_weights()
        b, k_total = x_t.shape[:2]
        per_sample_timesteps = timesteps.dim() == 2

        def value(w: dict, x_t: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            pred = torch.func.functional_call(denoiser, w, (x_t, t, None))
            return self.fn(pred, noise, t, self.alphas_cumprod).sum() / k_total

        t_dim = 0 if per_sample_timesteps else None
        per_sample = torch.func.vmap(torch.func.grad(value), in_dims=(None, 0, 0, t_dim))
        chunk = max(1, self.timestep_batch // b)
        total = None
        with _vmappable_attention(self.model.unet):
            for start in range(0, k_total, chunk):
                t = timesteps[..., start : start + chunk].to(device)
                grads = per_sample(
                    weights,
                    x_t[:, start : start + chunk].to(device),
                    noise[:, start : start + chunk].to(device),
                    t,
                )
                flat = torch.cat([grads[n].reshape(b, -1) for n in names], dim=1)
                total = flat if total is None else total + flat
        return total

    def __call__(self, image: torch.Tensor, caption: str | None = None) -> torch.Tensor:
        """The flat gradient (P,) for one image (C, H, W) in [-1, 1] (with its caption, if conditional)."""
        if self.spec.normalize_timesteps:
            x0 = self.model.encode(image[None].to(self.model.device))
            cond = self.model.condition([caption or ""]) if self.model.prompts is not None else None
            return self._unit_timestep_average(x0, cond)
        return self.drawn(image, self.timesteps, self.noise, caption)

    def drawn(
        self, image: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor, caption: str | None = None
    ) -> torch.Tensor:
        """The flat gradient (P,) of grad_theta (1/K) sum_k f(eps_theta(x_t_k, t_k), noise_k, t_k) for one
        image at given draws: timesteps (K,), noise (K, *latent) (the featurizer's, or EK-FAC's)."""
        device = self.model.device
        x0 = self.model.encode(image[None].to(device))
        cond = self.model.condition([caption or ""]) if self.model.prompts is not None else None
        for p in self.params:
            p.grad = None
        k_total = len(timesteps)
        for start in range(0, k_total, self.timestep_batch):
            t = timesteps[start : start + self.timestep_batch].to(device)
            noise_k = noise[start : start + self.timestep_batch].to(device)
            x_t = self.model.add_noise(x0.expand_as(noise_k), noise_k, t)
            value = self.fn(self.model.predict_noise(x_t, t, cond), noise_k, t, self.alphas_cumprod)
            (value.sum() / k_total).backward()
        return torch.cat([p.grad.reshape(-1) for p in self.params])

    def _unit_timestep_average(self, x0: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """(1/K) sum_k g_k / ||g_k||: each timestep's gradient scaled to unit L2 norm (DAS, ReTrac)."""
        noise = self.noise.to(x0.device)
        timesteps = self.timesteps.to(x0.device)
        x_t = self.model.add_noise(x0.expand_as(noise), noise, timesteps)
        return self.lane_gradients(x_t, noise, timesteps, cond, unit=True).mean(0)

    def lane_gradients(
        self,
        x_t: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        cond: Any = None,
        unit: bool = False,
    ) -> torch.Tensor:
        """(L, P): the gradient of f at each of L (x_t, noise, t) lanes (scaled to unit L2 norm if `unit`).

        vmap(grad) over chunks of lanes (a sample's timesteps, or several samples at a timestep each),
        each chunk at most `timestep_batch` lanes and 2^26 gradient entries, through `predict_noise`.
        """
        denoiser, names, weights = self._functional_weights()

        def value(w: dict, x_t: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            pred = torch.func.functional_call(denoiser, w, (x_t[None], t[None], cond))
            return self.fn(pred, noise[None], t[None], self.alphas_cumprod)[0]

        per_lane = torch.func.vmap(torch.func.grad(value), in_dims=(None, 0, 0, 0))
        chunk = max(1, min(self.timestep_batch, 2**26 // sum(w.numel() for w in weights.values())))
        rows = []
        with _vmappable_attention(self.model.unet):
            for start in range(0, len(timesteps), chunk):
                lanes = slice(start, start + chunk)
                grads = per_lane(weights, x_t[lanes], noise[lanes], timesteps[lanes])
                flat = torch.cat([grads[n].reshape(len(grads[names[0]]), -1) for n in names], dim=1)
                rows.append(flat / flat.norm(dim=1, keepdim=True).clamp(min=1e-30) if unit else flat)
        return torch.cat(rows)


@contextlib.contextmanager
def _vmappable_attention(unet: torch.nn.Module) -> Iterator[None]:
    """Attention by batched matmuls while vmapped (torch has no vmap rule for CPU fused attention)."""
    layers = [m for m in unet.modules() if isinstance(m, Attention)]
    saved = [m.processor for m in layers]
    for m in layers:
        m.set_processor(AttnProcessor())
    try:
        yield
    finally:
        for m, processor in zip(layers, saved, strict=True):
            m.set_processor(processor)


class _Denoiser(torch.nn.Module):
    """The model's noise prediction as a module, so torch.func can swap in per-timestep weights."""

    def __init__(self, model: DiffusionModel) -> None:
        super().__init__()
        self.unet, self.model = model.unet, model

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.model.predict_noise(x_t, t, cond)


def featurize(
    model: DiffusionModel,
    images: torch.Tensor,
    spec: FeaturizerSpec,
    batch_size: int,
    noise_seed: int = 0,
    projector: RandomProjector | SparseProjector | None = None,
    stats: dict[str, float] | None = None,
    captions: Sequence[str] | None = None,
) -> np.ndarray:
    """Projected timestep-averaged gradients of every image (given its caption): (N, k) float32.

    `stats`, if given, receives the seconds spent in gradients and in projection.
    """
    model.unet.eval()
    gradient = TimestepAveragedGradient(model, spec, noise_seed)
    projector = projector or make_projector(model, spec)
    out = np.zeros((len(images), spec.dim), dtype=np.float32)
    # A sparse projection costs O(P) per row whatever the batch: project each gradient batch as it
    # comes, so only those per-sample gradients are ever held. A dense one is cheaper on more rows.
    samples = gradient.samples
    step = samples if isinstance(projector, SparseProjector) else max(batch_size, samples)
    seconds = {"gradient_s": 0.0, "projection_s": 0.0}
    start_time = time.perf_counter()
    for start in range(0, len(images), step):
        tick = time.perf_counter()
        stop = min(start + step, len(images))
        if samples > 1:
            rows = torch.cat(
                [gradient.batch(images[i : min(i + samples, stop)]) for i in range(start, stop, samples)]
            )
        else:
            rows = torch.stack(
                [gradient(images[i], None if captions is None else captions[i]) for i in range(start, stop)]
            )
        tock = time.perf_counter()
        out[start : start + len(rows)] = projector.project(rows).numpy()
        seconds["gradient_s"] += tock - tick
        seconds["projection_s"] += time.perf_counter() - tock
        done = start + len(rows)
        if done % batch_size < step or done == len(images):
            log.info("featurized %d/%d  %.1fs", done, len(images), time.perf_counter() - start_time)
    if stats is not None:
        stats.update(seconds)
    return out


def featurize_at_draws(
    model: DiffusionModel,
    images: torch.Tensor,
    draws: TrainingDraws,
    spec: FeaturizerSpec,
    projector: RandomProjector | SparseProjector | None = None,
    captions: Sequence[str] | None = None,
) -> np.ndarray:
    """Projected gradients (N, k) float32 of the featurizer's output for each image at the (t, noise, flip)
    of its latest training step (`draws`, the rows of these images): the train side of Diffusion-TracIn
    and ReTrac (Xie et al.). A sample not trained on by this checkpoint gets a zero row."""
    model.unet.eval()
    gradient = TimestepAveragedGradient(model, replace(spec, timesteps=1))
    projector = projector or make_projector(model, spec)
    out = np.zeros((len(images), spec.dim), dtype=np.float32)
    seen = torch.nonzero(draws.seen).flatten().tolist()
    step = gradient.samples  # unconditional samples go through vmap together, conditional ones alone
    for start in range(0, len(seen), step):
        rows = torch.tensor(seen[start : start + step])
        x = images[rows].to(model.device)
        x0 = model.encode(torch.where(draws.flip[rows, None, None, None].to(x.device), x.flip(-1), x))
        noise, t = draws.noise[rows].to(x0.device), draws.t[rows].to(x0.device)
        cond = None if model.prompts is None else model.condition([(captions or [""] * len(images))[rows[0]]])
        grads = gradient.lane_gradients(model.add_noise(x0, noise, t), noise, t, cond)
        out[rows.numpy()] = projector.project(grads).numpy()
    log.info(
        "featurized %d/%d at their training draws (%d not trained on yet)",
        len(seen),
        len(images),
        len(images) - len(seen),
    )
    return out


def trajectory_steps(num_steps: int, count: int) -> np.ndarray:
    """Indices of `count` DDIM steps evenly spaced over the `num_steps` of a trajectory (all if 0)."""
    if count <= 0 or count >= num_steps:
        return np.arange(num_steps)
    return np.unique(np.linspace(0, num_steps - 1, count).round().astype(np.int64))


def denoised_estimate(
    model: DiffusionModel, latents: torch.Tensor, predicted_noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), clipped as the DDIM step clips it when the
    scheduler clips samples; latents and predicted_noise (N, S, *latent), timesteps (S,)."""
    abar = model.scheduler.alphas_cumprod.to(latents.device)[timesteps.to(latents.device)]
    abar = abar.view(1, -1, *[1] * (latents.dim() - 2)).to(latents.dtype)
    x0 = (latents - (1 - abar).sqrt() * predicted_noise) / abar.sqrt()
    config = model.scheduler.config
    return x0.clamp(-config.clip_sample_range, config.clip_sample_range) if config.clip_sample else x0


def featurize_trajectory(
    model: DiffusionModel,
    trajectory: dict[str, np.ndarray],
    spec: FeaturizerSpec,
    steps: int = 0,
    projector: RandomProjector | SparseProjector | None = None,
    noise_seed: int = 0,
) -> np.ndarray:
    """Journey-TRAK target features (N, k) float32: the output of MadryLab/journey-TRAK's
    `DiffusionModelOutput._get_output_scoring` (Georgiev et al. 2023) at the kept steps of each DDIM run.

    At each kept step t (`steps` evenly spaced, 0 = all), the run's denoised estimate x0_hat
    (`denoised_estimate` of the stored x_t and predicted noise; a constant) is noised again with the fixed
    noise eps_t of `noise_seed` (`fixed_noise`, shared by every sample, as in the train features):
    x'_t = sqrt(abar_t) x0_hat + sqrt(1 - abar_t) eps_t. The feature is the per-sample gradient w.r.t. the
    trainable weights of the featurizer's output f(eps_theta(x'_t, t), eps_t, t) (`loss`: the MSE against
    eps_t), averaged over the kept steps and projected like the train features. The authors score each
    step on its own with fresh random noise; here the steps share one feature and one fixed noise draw
    each, so a target's feature is deterministic. `trajectory` holds `ddim_trajectory`'s `latents` and
    `predicted_noise` (N, S, *latent) and `timesteps` (S,).
    """
    if model.prompts is not None:
        raise InputError("Journey-TRAK: conditional families are not supported (config key 'methods')")
    model.unet.eval()
    keep = trajectory_steps(len(trajectory["timesteps"]), steps)
    timesteps = torch.from_numpy(trajectory["timesteps"][keep])
    noise = torch.stack([fixed_noise(noise_seed, t, model.latent_shape) for t in timesteps.tolist()])
    gradient = TimestepAveragedGradient(model, replace(spec, timesteps=len(keep)))
    projector = projector or make_projector(model, spec)
    count = len(trajectory["latents"])
    out = np.zeros((count, spec.dim), dtype=np.float32)
    for start in range(0, count, gradient.samples):
        rows = slice(start, start + gradient.samples)
        latents = torch.from_numpy(np.ascontiguousarray(trajectory["latents"][rows, keep]))
        predicted = torch.from_numpy(np.ascontiguousarray(trajectory["predicted_noise"][rows, keep]))
        x0_hat = denoised_estimate(model, latents, predicted, timesteps)
        b = len(x0_hat)
        eps = noise.to(x0_hat.dtype).repeat(b, *[1] * (noise.dim() - 1))
        x_t = model.add_noise(x0_hat.flatten(0, 1), eps, timesteps.repeat(b)).view_as(x0_hat)
        grads = gradient.given(x_t, eps.view_as(x0_hat), timesteps)
        out[start : start + b] = projector.project(grads).numpy()
        log.info("featurized trajectories %d/%d", start + b, count)
    return out
