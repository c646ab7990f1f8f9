"""The pixel-space diffusion model family: a diffusers UNet2DModel with a DDPM noise schedule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

from diffattr.errors import InputError

PRUNED_UNET = "pruned_unet.pt"


def build_unet(model_config: dict, sample_size: int, channels: int, seed: int = 0) -> UNet2DModel:
    """A fresh UNet2DModel from the `model` section of the config and the data's shape.

    Its initial weights depend only on `seed` (the global RNG state is left untouched).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _unet(model_config, sample_size, channels)


def _unet(model_config: dict, sample_size: int, channels: int) -> UNet2DModel:
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(model_config["block_out_channels"]),
        layers_per_block=model_config["layers_per_block"],
        down_block_types=tuple(model_config["down_block_types"]),
        up_block_types=tuple(model_config["up_block_types"]),
        norm_num_groups=model_config["norm_num_groups"],
        attention_head_dim=model_config["attention_head_dim"],
        dropout=model_config["dropout"],
        resnet_time_scale_shift=model_config["resnet_time_scale_shift"],
    )


def build_scheduler(scheduler_config: dict) -> DDPMScheduler:
    """The DDPM forward process used in training, loss measurement and featurization."""
    return DDPMScheduler(
        num_train_timesteps=scheduler_config["num_train_timesteps"],
        beta_schedule=scheduler_config["beta_schedule"],
        prediction_type="epsilon",
        clip_sample=True,
    )


@dataclass
class PixelDiffusion:
    """A denoiser and its noise schedule: the interface every stage after training uses."""

    unet: UNet2DModel
    scheduler: DDPMScheduler

    def to(self, device: torch.device | str) -> PixelDiffusion:
        self.unet.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Map images in [-1, 1] to the diffusion space (the identity for pixel-space models)."""
        return images

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        return self.scheduler.add_noise(x0, noise, t)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_t, t)."""
        return self.unet(x_t, t).sample

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.unet.parameters() if p.requires_grad]

    def save_pretrained(self, path: str | Path) -> None:
        """diffusers layout; a pruned UNet (whose config no longer matches its shapes) is saved whole."""
        if getattr(self.unet, "diffattr_pruned", False):
            (Path(path) / "unet").mkdir(parents=True, exist_ok=True)
            torch.save(self.unet, Path(path) / "unet" / PRUNED_UNET)
        else:
            self.unet.save_pretrained(Path(path) / "unet")
        self.scheduler.save_pretrained(Path(path) / "scheduler")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> PixelDiffusion:
        """Load from a local directory written by `save_pretrained` (or a hub-cache snapshot of one)."""
        path = Path(path)
        if (path / "unet" / PRUNED_UNET).is_file():
            unet = torch.load(path / "unet" / PRUNED_UNET, weights_only=False, map_location="cpu")
        elif (path / "unet" / "config.json").is_file():
            unet = UNet2DModel.from_pretrained(path / "unet", local_files_only=True)
        else:
            raise InputError(f"not a saved diffattr model (no unet/config.json): {path}")
        scheduler = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True)
        return cls(unet=unet, scheduler=scheduler)


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else CPU; `cuda` without a GPU is an input error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"config key 'device': {name!r} requested but no CUDA device is available")
    return torch.device(name)
