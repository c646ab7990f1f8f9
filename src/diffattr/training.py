"""Train a diffusion model on a set of images with accelerate: AdamW, optional EMA, checkpoints."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
)
from diffusers.training_utils import EMAModel

from diffattr.families.base import DiffusionModel, conditioner, encode_all
from diffattr.training_draws import TrainingDraws

log = logging.getLogger(__name__)


@dataclass
class TrainingRecord:
    """What a training run did: enough to audit it and to weight TracIn checkpoints.

    Each checkpoint records the lr of its step and `lr_sum`, the lrs summed over the steps since the
    previous checkpoint (the interval it stands for in TracIn's sum).
    """

    steps: int
    seed: int
    n_train: int
    seconds: float
    losses: list[tuple[int, float]] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)


def total_steps(train_config: dict, n_train: int) -> int:
    """Steps from `train.steps`, or from `train.epochs` over n_train images at the batch size."""
    if train_config.get("steps"):
        return int(train_config["steps"])
    return int(train_config["epochs"]) * math.ceil(n_train / train_config["batch_size"])


def checkpoint_steps(steps: int, count: int) -> list[int]:
    """`count` evenly spaced steps ending at the last one (none if count is 0)."""
    return sorted({round(steps * (i + 1) / count) for i in range(count)}) if count else []


def draw_timesteps(n: int, num_timesteps: int, generator: torch.Generator, sampling: str) -> torch.Tensor:
    """Timesteps of a batch of n: `uniform` draws each from 0..T-1; `antithetic` (Lu et al.'s training
    loop) draws n // 2 + 1 of them, follows them with their mirrors T-1-t and keeps the first n, so the
    batch covers both ends of the schedule (a lower-variance loss estimate)."""
    if sampling == "antithetic":
        drawn = torch.randint(0, num_timesteps, (n // 2 + 1,), generator=generator)
        return torch.cat([drawn, num_timesteps - 1 - drawn])[:n]
    return torch.randint(0, num_timesteps, (n,), generator=generator)


def train(
    model: DiffusionModel,
    images: torch.Tensor,
    train_config: dict,
    seed: int,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    ascent: bool = False,
    captions: Sequence[str] | None = None,
) -> TrainingRecord:
    """Train `model`'s trainable parameters in place on `images` in [-1, 1] (conditioned on their
    `captions`, if any); with EMA, the EMA weights are left in the model.

    With `ascent`, the loss is maximised instead (gradient-ascent unlearning of `images`).
    """
    torch.manual_seed(seed)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="no")
    steps = total_steps(train_config, len(images))
    model.to(accelerator.device)
    params = model.trainable_parameters()
    for p in params:
        p.requires_grad_(True)
    unet = model.unet
    unet.train()
    optimizer = torch.optim.AdamW(
        params,
        lr=train_config["lr"],
        betas=tuple(train_config["betas"]),
        weight_decay=train_config["weight_decay"],
        foreach=True,
    )
    warmup = int(train_config["warmup_fraction"] * steps)
    if train_config["lr_schedule"] == "cosine":
        lr_schedule = get_cosine_schedule_with_warmup(optimizer, warmup, steps)
    else:
        lr_schedule = get_constant_schedule_with_warmup(optimizer, warmup)
    unet, optimizer, lr_schedule = accelerator.prepare(unet, optimizer, lr_schedule)
    model.unet = unet
    ema = EMAModel(params, decay=train_config["ema_max_decay"], foreach=True) if train_config["ema"] else None
    if ema is not None:
        ema.to(accelerator.device)

    data = encode_all(model, images.to(accelerator.device), train_config["batch_size"])
    # a flip mirrors the image, then encodes it: a latent family's encoder does not commute with mirroring
    flipped = None
    if train_config.get("random_flip"):
        flipped = encode_all(model, images.flip(-1).to(accelerator.device), train_config["batch_size"])
    cond_of = conditioner(model, captions)
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(train_config["batch_size"], len(data))
    num_timesteps = model.scheduler.config.num_train_timesteps
    sampling = train_config.get("timestep_sampling", "uniform")
    keep = set(checkpoint_steps(steps, train_config["checkpoints"]))
    # each sample's latest (t, noise, flip), saved with each checkpoint for TracIn / ReTrac
    draws = TrainingDraws.empty(len(data), tuple(data.shape[1:])) if keep and checkpoint_dir else None
    record = TrainingRecord(steps=steps, seed=seed, n_train=len(data), seconds=0.0)
    log_every = max(1, steps // 10)
    order = torch.randperm(len(data), generator=generator)
    cursor, start = 0, time.perf_counter()
    lr_sum = 0.0
    for step in range(1, steps + 1):
        if cursor + batch_size > len(data):
            order, cursor = torch.randperm(len(data), generator=generator), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        x0 = data[idx]
        flip = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
        if flipped is not None:
            flip = (torch.rand(len(x0), generator=generator) < 0.5).to(x0.device)
            x0 = torch.where(flip[:, None, None, None], flipped[idx], x0)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = draw_timesteps(len(x0), num_timesteps, generator, sampling).to(x0.device)
        if draws is not None:
            draws.record(idx, t, noise, flip)
        pred = model.predict_noise(model.add_noise(x0, noise, t), t, cond_of(idx))
        loss = torch.nn.functional.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(-loss if ascent else loss)
        if train_config["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(params, train_config["grad_clip"], foreach=True)
        lr_used = optimizer.param_groups[0]["lr"]
        lr_sum += lr_used
        optimizer.step()
        lr_schedule.step()
        if ema is not None:
            ema.step(params)
        if step % log_every == 0 or step == steps:
            record.losses.append((step, loss.item()))
            log.info(
                "step %d/%d  loss %.4f  lr %.2e  %.1fs",
                step,
                steps,
                loss.item(),
                lr_used,
                time.perf_counter() - start,
            )
        if step in keep and checkpoint_dir is not None:
            _save_checkpoint(model, params, ema, checkpoint_dir / f"step{step}")
            draws.save(checkpoint_dir / f"step{step}")
            record.checkpoints.append({"step": step, "lr": lr_used, "lr_sum": lr_sum, "path": f"step{step}"})
            lr_sum = 0.0
    model.unet = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.copy_to(params)
    model.unet.eval()
    record.seconds = time.perf_counter() - start
    return record


def _save_checkpoint(
    model: DiffusionModel, params: list[torch.nn.Parameter], ema: EMAModel | None, path: Path
) -> None:
    """Save the weights the model would have if training stopped here (EMA weights when EMA is on)."""
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    model.save_pretrained(path)
    if ema is not None:
        ema.restore(params)
