"""Model families: which one a config names, building a fresh model and loading a saved one.

A family is one module with a `DiffusionModel` subclass (see base.py) that has a `build` classmethod;
add it to FAMILIES and to the schema's `model.family` enum.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from diffattr.errors import InputError
from diffattr.families.base import DiffusionModel, read_family
from diffattr.pretrained import OWN_FAMILIES

# Imported on first use, so that rules of one family never import another's dependencies.
FAMILIES = {
    "pixel": "diffattr.models:PixelDiffusion",
    "latent": "diffattr.families.latent:LatentDiffusion",
    "lora": "diffattr.families.lora:LoraDiffusion",
}


def family_class(name: str) -> type[DiffusionModel]:
    """The class of a family by its config name."""
    if name not in FAMILIES:
        raise InputError(f"config key 'model.family': unknown family {name!r} (known: {sorted(FAMILIES)})")
    module, _, cls = FAMILIES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_model(
    model_config: dict,
    scheduler_config: dict,
    image_shape: Sequence[int],
    seed: int = 0,
    prompts: Sequence[str] | None = None,
) -> DiffusionModel:
    """A fresh model of the config's family for images of `image_shape` (C, H, W).

    Its initial trainable weights depend only on `seed`; `prompts` are the captions generation
    cycles through (conditional families).
    """
    cls = family_class(model_config.get("family", "pixel"))
    return cls.build(model_config, scheduler_config, tuple(image_shape), seed, prompts)


def load_model(path: str | Path) -> DiffusionModel:
    """A model saved by any family's `save_pretrained`."""
    return family_class(read_family(path)["family"]).from_pretrained(path)


def load_own_model(model_config: dict, image_shape: Sequence[int]) -> DiffusionModel:
    """A user's trained model (model.pretrained of the pixel or latent family), checked to denoise images of
    `image_shape` (C, H, W) or their latents: the attributed full model, in place of training one."""
    family = model_config.get("family", "pixel")
    if family not in OWN_FAMILIES:
        raise InputError(
            f"config key 'model.pretrained': family {family!r} trains its own full model "
            f"(a trained model is attributed in families {list(OWN_FAMILIES)})"
        )
    return family_class(family).from_folder(model_config, tuple(image_shape))


def distinct_prompts(captions: Sequence[str] | None) -> list[str] | None:
    """The sorted distinct captions of a data set: what a conditional model generates from."""
    return sorted(set(captions)) if captions is not None else None
