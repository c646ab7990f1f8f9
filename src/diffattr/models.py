"""The pixel-space diffusion model family: a diffusers UNet2DModel with a DDPM noise schedule."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import diffusers
import torch
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from safetensors import SafetensorError

from diffattr.architecture import ARCHITECTURE, is_pruned, load_pruned, refuse_pickles, save_pruned
from diffattr.errors import InputError
from diffattr.families.base import DiffusionModel
from diffattr.pretrained import check_fits, own_folder, unet_config


def build_unet(model_config: dict, sample_size: int, channels: int, seed: int = 0) -> UNet2DModel:
    """A fresh UNet2DModel from the `model` section of the config and the data's shape.

    Its initial weights depend only on `seed` (the global RNG state is left untouched).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _unet(model_config, sample_size, channels)


# Keys of the `model` section passed on only when present: absent (a hand-written model dict), they take
# diffusers' UNet2DModel defaults, which are the schema's defaults too.
UNET_KEYS = ("flip_sin_to_cos", "freq_shift", "downsample_padding", "norm_eps")


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
        **{key: model_config[key] for key in UNET_KEYS if key in model_config},
    )


SCHEDULE_KEYS = ("beta_start", "beta_end", "clip_sample")


def build_scheduler(scheduler_config: dict) -> DDPMScheduler:
    """The DDPM forward process used in training, loss measurement and featurization.

    beta_start, beta_end and clip_sample absent from `scheduler_config` take diffusers' defaults
    (1e-4, 0.02, clipping on), the schema's defaults too.
    """
    return DDPMScheduler(
        num_train_timesteps=scheduler_config["num_train_timesteps"],
        beta_schedule=scheduler_config["beta_schedule"],
        prediction_type="epsilon",
        **{key: scheduler_config[key] for key in SCHEDULE_KEYS if key in scheduler_config},
    )


def save_unet(unet: torch.nn.Module, path: Path) -> None:
    """diffusers layout (safetensors); a pruned UNet also records its per-layer channel counts."""
    if is_pruned(unet):
        save_pruned(unet, path)
    else:
        unet.save_pretrained(path, safe_serialization=True)


def load_unet(path: Path) -> UNet2DModel:
    """A UNet written by `save_unet`, from safetensors only (pickled weights are refused, never loaded)."""
    if (path / ARCHITECTURE).is_file():
        return load_pruned(path)
    if path.is_dir():
        refuse_pickles(path)
    if not (path / "config.json").is_file():
        raise InputError(f"not a saved diffattr model (no unet/config.json): {path.parent}")
    try:
        return UNet2DModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: not a loadable diffusers UNet ({first})") from None


def load_scheduler(folder: Path, key: str = "model.pretrained") -> DDPMScheduler:
    """The DDPM forward process of a user's model from its scheduler/ (a DDIM scheduler's config reads as
    the same betas); the families here predict noise, so only prediction_type epsilon."""
    try:
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    except (OSError, ValueError, NotImplementedError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"config key '{key}': {folder}/scheduler is not a loadable scheduler ({first})"
        ) from None
    if scheduler.config.prediction_type != "epsilon":
        raise InputError(
            f"config key '{key}': {folder}/scheduler predicts {scheduler.config.prediction_type!r}; "
            "only 'epsilon' (noise) is supported"
        )
    return scheduler


def fresh_denoiser(
    model_config: dict, scheduler_config: dict, shape: tuple[int, ...], seed: int, inputs: str
) -> tuple[UNet2DModel, DDPMScheduler]:
    """A fresh UNet for inputs of `shape` (C, H, W) and its noise schedule: the config's, or with a user's
    own model (model.pretrained) its folder's architecture and schedule, so that retrains match it.

    Its initial weights depend only on `seed`; `inputs` names the inputs in a shape mismatch's message.
    """
    folder = own_folder(model_config)
    if folder is None:
        unet = build_unet(model_config, sample_size=shape[-1], channels=shape[0], seed=seed)
        return unet, build_scheduler(scheduler_config)
    config = unet_config(model_config)
    check_fits(config, shape, "model.pretrained", inputs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel.from_config(config)
    return unet, load_scheduler(folder)


def trained_denoiser(
    model_config: dict, shape: tuple[int, ...], inputs: str
) -> tuple[UNet2DModel, DDPMScheduler]:
    """The trained UNet and noise schedule of a user's own model (model.pretrained), checked to denoise
    inputs of `shape` (C, H, W), named `inputs` in a mismatch's message."""
    folder = Path(model_config["pretrained"])
    check_fits(unet_config(model_config), shape, "model.pretrained", inputs)
    try:
        unet = load_unet(folder / "unet")
    except InputError as err:
        raise InputError(f"config key 'model.pretrained': {err}") from None
    if is_pruned(unet):
        raise InputError(
            f"config key 'model.pretrained': {folder}/unet is pruned; retrains of its architecture could not "
            "match it"
        )
    return unet, load_scheduler(folder)


@dataclass
class PixelDiffusion(DiffusionModel):
    """The pixel family: a UNet2DModel denoising images directly (DDPM on CIFAR, CelebA)."""

    family: ClassVar[str] = "pixel"
    unet: UNet2DModel
    scheduler: DDPMScheduler

    @classmethod
    def build(
        cls,
        model_config: dict,
        scheduler_config: dict,
        image_shape: tuple[int, ...],
        seed: int,
        prompts: Sequence[str] | None = None,
    ) -> PixelDiffusion:
        """A fresh UNet over images of `image_shape` (C, H, W) (see fresh_denoiser)."""
        return cls(*fresh_denoiser(model_config, scheduler_config, image_shape, seed, "the data's images"))

    @classmethod
    def from_folder(cls, model_config: dict, image_shape: tuple[int, ...]) -> PixelDiffusion:
        """A user's trained DDPM (model.pretrained) that denoises images of `image_shape` (C, H, W)."""
        return cls(*trained_denoiser(model_config, image_shape, "the data's images"))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The identity: a pixel model diffuses images in [-1, 1]."""
        return images

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The identity."""
        return x

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """eps_theta(x_t, t)."""
        return self.unet(x_t, t).sample

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        return (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.unet.parameters())

    def copy(self) -> PixelDiffusion:
        return PixelDiffusion(copy.deepcopy(self.unet), self.scheduler)

    def prune(self, ratio: float, scope: str = "global") -> dict:
        """Structured channel pruning of the UNet (see diffattr.pruning); `scope` is for LoRA only."""
        from diffattr.pruning import prune_unet

        return prune_unet(self.unet, ratio).to_dict()

    def save_pretrained(self, path: str | Path) -> None:
        """unet/ and scheduler/ in diffusers layout, and family.json; an unpruned model also gets the
        model_index.json of a DDPMPipeline, so `DDPMPipeline.from_pretrained(path)` opens it."""
        save_unet(self.unet, Path(path) / "unet")
        self.scheduler.save_pretrained(Path(path) / "scheduler")
        self.write_family(path)
        if not is_pruned(self.unet):
            index = {
                "_class_name": "DDPMPipeline",
                "_diffusers_version": diffusers.__version__,
                "scheduler": ["diffusers", type(self.scheduler).__name__],
                "unet": ["diffusers", "UNet2DModel"],
            }
            (Path(path) / "model_index.json").write_text(json.dumps(index, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> PixelDiffusion:
        """Load from a local directory written by `save_pretrained` (or a hub-cache snapshot of one)."""
        path = Path(path)
        unet = load_unet(path / "unet")
        scheduler = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True)
        return cls(unet=unet, scheduler=scheduler)
