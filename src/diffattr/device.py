"""The compute device from config: `auto` is CUDA when available, else CPU. A module of its own so that
jobs which need no diffusion model (CLIP scores, property features) do not import diffusers for it."""

from __future__ import annotations

import torch

from diffattr.errors import InputError


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else CPU; `cuda` without a GPU is an input error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"config key 'device': {name!r} requested but no CUDA device is available")
    return torch.device(name)
