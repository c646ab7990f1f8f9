"""A user's own trained model (`model.pretrained` of the pixel and latent families): its folder's
unet/, scheduler/ and family.json read as JSON, without torch, so that pre-flight checks it before any
job and the families load and rebuild it (diffattr.models, diffattr.families.latent).

The folder is a diffusers pipeline folder (unet/ holding a UNet2DModel in safetensors, scheduler/) or one
that a diffattr model's save_pretrained wrote. The lora family's `model.pretrained` is its base Stable
Diffusion snapshot instead (diffattr.families.lora).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from diffattr.errors import InputError

OWN_FAMILIES = ("pixel", "latent")
AUTOENCODER_SUBFOLDERS = ("vae", "vqvae")  # a snapshot's autoencoder, as an LDM pipeline folder has it


def own_folder(model_config: dict) -> Path | None:
    """The folder of the user's trained model to attribute, or None when the full model is trained here."""
    if model_config.get("family", "pixel") in OWN_FAMILIES and model_config.get("pretrained"):
        return Path(model_config["pretrained"])
    return None


def _read_json(file: Path, key: str) -> dict:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"config key '{key}': {file} is not readable JSON ({type(err).__name__})") from None


def unet_config(model_config: dict, key: str = "model.pretrained") -> dict:
    """unet/config.json of the folder at `key`, once the folder is known to hold a UNet2DModel in
    safetensors, a scheduler/ and no family.json of another family; else one line naming key and folder."""
    folder = Path(model_config["pretrained"])
    if not folder.is_dir():
        raise InputError(f"config key '{key}': no such folder: {folder}")
    saved = folder / "family.json"
    family, saved_family = model_config.get("family", "pixel"), None
    if saved.is_file():
        saved_family = _read_json(saved, key).get("family")
    if saved_family not in (None, family):
        raise InputError(
            f"config key '{key}': {folder} holds a {saved_family!r} model (family.json), "
            f"model.family is {family!r}"
        )
    file = folder / "unet" / "config.json"
    if not file.is_file():
        raise InputError(f"config key '{key}': {folder} has no loadable UNet (no unet/config.json)")
    config = _read_json(file, key)
    if config.get("_class_name") != "UNet2DModel":
        raise InputError(
            f"config key '{key}': {folder}/unet holds a {config.get('_class_name')}, not a UNet2DModel"
        )
    if not any((folder / "unet").glob("*.safetensors")):
        raise InputError(
            f"config key '{key}': {folder}/unet has no safetensors weights (pickled weights are never loaded)"
        )
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        raise InputError(f"config key '{key}': {folder} has no scheduler/scheduler_config.json")
    return config


def check_fits(config: dict, shape: Sequence[int], key: str, inputs: str) -> None:
    """The UNet of unet/config.json `config` denoises inputs of `shape` (C, H, W): its sample_size and
    in/out channels are theirs; else one line naming both."""
    size = config.get("sample_size")
    side = (size, size) if isinstance(size, int) else tuple(size or ())
    channels = (config.get("in_channels"), config.get("out_channels"))
    if channels == (shape[0], shape[0]) and side == tuple(shape[1:]):
        return
    raise InputError(
        f"config key '{key}': its UNet takes {channels[0]}-channel inputs of sample_size {size} "
        f"(out_channels {channels[1]}), {inputs} are {shape[0]}-channel {shape[1]}x{shape[2]}"
    )


def num_train_timesteps(model_config: dict) -> int | None:
    """The length of the noise schedule in the own model's scheduler/, or None (no own model, or not
    readable yet: pre-flight reports the folder before the first job)."""
    folder = own_folder(model_config)
    file = folder / "scheduler" / "scheduler_config.json" if folder else None
    if file is None or not file.is_file():
        return None
    try:
        return int(json.loads(file.read_text())["num_train_timesteps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def autoencoder_folder(path: str | Path, subfolders: Sequence[str] = AUTOENCODER_SUBFOLDERS) -> Path:
    """The folder of an autoencoder's config.json: `path` itself, or a snapshot's vae/ or vqvae/."""
    root = Path(path)
    return next((root / s for s in subfolders if (root / s / "config.json").is_file()), root)


def latent_shape(vae_config: dict, image_shape: Sequence[int]) -> tuple[int, int, int]:
    """The latent (C, H, W) that an AutoencoderKL / VQModel of `vae_config` makes of images of
    `image_shape`, from its config alone: each encoder level but the last halves the side (diffusers'
    Downsample2D pads right and bottom by one, then a 3x3 convolution of stride 2)."""
    h, w = image_shape[1:]
    for _ in range(len(vae_config["block_out_channels"]) - 1):
        h, w = (h - 2) // 2 + 1, (w - 2) // 2 + 1
    channels = vae_config.get("vq_embed_dim") or vae_config["latent_channels"]
    return channels, h, w
