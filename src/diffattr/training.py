"""Train a diffusion model on a set of images with accelerate: AdamW, optional EMA, checkpoints."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
)
from diffusers.training_utils import EMAModel

from diffattr.models import PixelDiffusion

log = logging.getLogger(__name__)


@dataclass
class TrainingRecord:
    """What a training run did: enough to audit it and to weight TracIn checkpoints by their lr."""

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


def train(
    model: PixelDiffusion,
    images: torch.Tensor,
    train_config: dict,
    seed: int,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    ascent: bool = False,
) -> TrainingRecord:
    """Train `model` in place on `images` in [-1, 1]; with EMA, the EMA weights are left in the model.

    With `ascent`, the loss is maximised instead (gradient-ascent unlearning of `images`).
    """
    torch.manual_seed(seed)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="no")
    steps = total_steps(train_config, len(images))
    unet = model.unet
    unet.train()
    optimizer = torch.optim.AdamW(
        unet.parameters(),
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
    ema = (
        EMAModel(unet.parameters(), decay=train_config["ema_max_decay"], foreach=True)
        if train_config["ema"]
        else None
    )
    if ema is not None:
        ema.to(accelerator.device)

    data = images.to(accelerator.device)
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(train_config["batch_size"], len(data))
    num_timesteps = model.scheduler.config.num_train_timesteps
    keep = set(checkpoint_steps(steps, train_config["checkpoints"]))
    record = TrainingRecord(steps=steps, seed=seed, n_train=len(data), seconds=0.0)
    log_every = max(1, steps // 10)
    order = torch.randperm(len(data), generator=generator)
    cursor, start = 0, time.perf_counter()
    for step in range(1, steps + 1):
        if cursor + batch_size > len(data):
            order, cursor = torch.randperm(len(data), generator=generator), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = torch.randint(0, num_timesteps, (len(x0),), generator=generator).to(x0.device)
        loss = torch.nn.functional.mse_loss(unet(model.add_noise(x0, noise, t), t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(-loss if ascent else loss)
        if train_config["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(unet.parameters(), train_config["grad_clip"], foreach=True)
        lr_used = optimizer.param_groups[0]["lr"]
        optimizer.step()
        lr_schedule.step()
        if ema is not None:
            ema.step(unet.parameters())
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
            _save_checkpoint(model, unet, ema, accelerator, checkpoint_dir / f"step{step}")
            record.checkpoints.append({"step": step, "lr": lr_used, "path": f"step{step}"})
    model.unet = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.copy_to(model.unet.parameters())
    model.unet.eval()
    record.seconds = time.perf_counter() - start
    return record


def _save_checkpoint(
    model: PixelDiffusion, unet, ema: EMAModel | None, accelerator: Accelerator, path: Path
) -> None:
    """Save the weights the model would have if training stopped here (EMA weights when EMA is on)."""
    net = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.store(net.parameters())
        ema.copy_to(net.parameters())
    PixelDiffusion(unet=net, scheduler=model.scheduler).save_pretrained(path)
    if ema is not None:
        ema.restore(net.parameters())
