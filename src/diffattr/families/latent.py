"""The latent family: a diffusers UNet2DModel denoising the latents of a frozen autoencoder (LDM).

The autoencoder (an AutoencoderKL or a VQModel in diffusers layout, `model.vae`) is loaded from a
local path and never trained; latents are the encoder's mean (KL) or pre-quantisation output (VQ),
shifted by the autoencoder's `shift_factor` and scaled by `model.latent_scale` (default: the
autoencoder's `scaling_factor`; Lu et al.'s LDM uses the VQ latents unscaled, a scale of 1).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.vq_model import VQModel
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

from diffattr.errors import InputError
from diffattr.families.base import read_family
from diffattr.models import PixelDiffusion, fresh_denoiser, load_unet, save_unet, trained_denoiser
from diffattr.pretrained import AUTOENCODER_SUBFOLDERS, autoencoder_folder, own_folder

LATENTS = "the latents of model.vae"  # what a latent UNet denoises, in a shape mismatch's message
AUTOENCODERS = {"AutoencoderKL": AutoencoderKL, "VQModel": VQModel}
Autoencoder = AutoencoderKL | VQModel


def load_autoencoder(path: str | Path | None, key: str, subfolders: Sequence[str] = AUTOENCODER_SUBFOLDERS):
    """A frozen AutoencoderKL / VQModel from a local diffusers folder (or a snapshot's vae/ subfolder)."""
    if not path:
        raise InputError(f"config key '{key}': required (a local folder with the autoencoder)")
    root = Path(path)
    folder = autoencoder_folder(root, subfolders)
    if not (folder / "config.json").is_file():
        raise InputError(f"config key '{key}': no autoencoder (config.json) at {root}")
    name = json.loads((folder / "config.json").read_text()).get("_class_name")
    if name not in AUTOENCODERS:
        raise InputError(f"config key '{key}': {folder} holds a {name}, not one of {sorted(AUTOENCODERS)}")
    vae = AUTOENCODERS[name].from_pretrained(folder, local_files_only=True)
    return vae.eval().requires_grad_(False)


def vae_encode(vae: Autoencoder, images: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Latents of images in [-1, 1] (deterministic: the mean of a KL posterior), multiplied by `scale`
    (None: the autoencoder's scaling_factor)."""
    with torch.no_grad():
        if isinstance(vae, VQModel):
            z = vae.encode(images).latents
        else:
            z = vae.encode(images).latent_dist.mode()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (z - shift) * (vae.config.scaling_factor if scale is None else scale)


def vae_decode(vae: Autoencoder, z: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Images in about [-1, 1] from latents scaled by `scale` (None: the autoencoder's scaling_factor);
    a VQ decoder quantises first."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return vae.decode(z / (vae.config.scaling_factor if scale is None else scale) + shift).sample


def latent_shape_of(vae: Autoencoder, image_shape: Sequence[int], key: str) -> tuple[int, int, int]:
    """The latent (C, H, W) of images of `image_shape`, found by encoding a blank image."""
    if image_shape[0] != vae.config.in_channels:
        raise InputError(
            f"config key '{key}': the autoencoder takes {vae.config.in_channels}-channel images, "
            f"the data has {image_shape[0]} channels"
        )
    z = vae_encode(vae, torch.zeros(1, *image_shape, device=next(vae.parameters()).device))
    return tuple(z.shape[1:])


def latent_scale(model_config: dict, vae: Autoencoder) -> float:
    """model.latent_scale; unset, a saved latent model's own (model.pretrained's family.json), else the
    autoencoder's scaling_factor."""
    scale = model_config.get("latent_scale")
    folder = own_folder(model_config)
    if scale is None and folder is not None:
        scale = read_family(folder).get("latent_scale")
    return float(vae.config.scaling_factor if scale is None else scale)


@dataclass
class LatentDiffusion(PixelDiffusion):
    """A UNet2DModel over the latents of a frozen autoencoder loaded from `vae_path`, multiplied by
    `latent_scale`: the pixel family's denoiser, training and pruning, with encode/decode through the
    autoencoder."""

    family: ClassVar[str] = "latent"
    vae: Autoencoder
    vae_path: str
    latent_scale: float

    @classmethod
    def build(
        cls,
        model_config: dict,
        scheduler_config: dict,
        image_shape: tuple[int, ...],
        seed: int,
        prompts: Sequence[str] | None = None,
    ) -> LatentDiffusion:
        """A fresh UNet sized to the latents of `model.vae` for images of `image_shape` (see
        fresh_denoiser)."""
        vae = load_autoencoder(model_config.get("vae"), "model.vae")
        shape = latent_shape_of(vae, image_shape, "model.vae")
        unet, scheduler = fresh_denoiser(model_config, scheduler_config, shape, seed, LATENTS)
        path = str(Path(model_config["vae"]).resolve())
        return cls(unet, scheduler, vae, path, latent_scale(model_config, vae))

    @classmethod
    def from_folder(cls, model_config: dict, image_shape: tuple[int, ...]) -> LatentDiffusion:
        """A user's trained LDM UNet (model.pretrained) over the latents of `model.vae` for images of
        `image_shape` (C, H, W)."""
        vae = load_autoencoder(model_config.get("vae"), "model.vae")
        shape = latent_shape_of(vae, image_shape, "model.vae")
        unet, scheduler = trained_denoiser(model_config, shape, LATENTS)
        path = str(Path(model_config["vae"]).resolve())
        return cls(unet, scheduler, vae, path, latent_scale(model_config, vae))

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.vae]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return vae_encode(self.vae, images, self.latent_scale)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.vae, x, self.latent_scale)

    def copy(self) -> LatentDiffusion:
        return LatentDiffusion(
            copy.deepcopy(self.unet), self.scheduler, self.vae, self.vae_path, self.latent_scale
        )

    def save_pretrained(self, path: str | Path) -> None:
        """unet/, scheduler/ and family.json with the autoencoder's path (it is not copied) and the
        latent scale."""
        save_unet(self.unet, Path(path) / "unet")
        self.scheduler.save_pretrained(Path(path) / "scheduler")
        self.write_family(path, vae=self.vae_path, latent_scale=self.latent_scale)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> LatentDiffusion:
        path = Path(path)
        info = read_family(path)
        vae = load_autoencoder(info["vae"], "model.vae")
        return cls(
            unet=load_unet(path / "unet"),
            scheduler=DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True),
            vae=vae,
            vae_path=info["vae"],
            latent_scale=float(info.get("latent_scale", vae.config.scaling_factor)),
        )
