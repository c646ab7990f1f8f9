"""The interface every stage after data uses to reach a diffusion model, whatever its family.

A family maps images to the space the diffusion runs in (pixels, or a frozen autoencoder's latents),
predicts the noise of a noisy input at some timesteps given an optional conditioning (text
embeddings of captions), names the parameters that train (all of the UNet, or only LoRA adapters),
and saves / loads itself in diffusers layout with a `family.json` saying which family it is.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

FAMILY_FILE = "family.json"


class DiffusionModel(ABC):
    """A denoiser `unet` over a diffusion space, with its DDPM noise schedule `scheduler`."""

    family: ClassVar[str]
    unet: torch.nn.Module
    scheduler: DDPMScheduler

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: torch.device | str) -> DiffusionModel:
        """Move every part (denoiser and frozen encoders) to `device`."""
        for module in self.modules():
            module.to(device)
        return self

    def modules(self) -> list[torch.nn.Module]:
        """Every torch module of the model: the denoiser first, then frozen parts."""
        return [self.unet]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        return self.scheduler.add_noise(x0, noise, t)

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (N, C, H, W) to the diffusion space (N, *latent_shape)."""

    @abstractmethod
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """A point of the diffusion space back to images in [-1, 1]."""

    @abstractmethod
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """eps_theta(x_t, t, cond); a conditioning of batch 1 is shared by every input."""

    def condition(self, captions: Sequence[str] | None) -> Any:
        """The conditioning of a batch of captions (None for unconditional families)."""
        return None

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one point of the diffusion space."""

    @property
    def prompts(self) -> list[str] | None:
        """Captions that generation cycles through (None for unconditional families)."""
        return None

    @abstractmethod
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters that train, and the only ones featurized and pruned."""

    @abstractmethod
    def copy(self) -> DiffusionModel:
        """A model whose trainable parts are independent copies (frozen parts may be shared)."""

    @abstractmethod
    def prune(self, ratio: float, scope: str = "global") -> dict:
        """Remove `ratio` of the trainable structure in place; the record goes to pruning.json. `scope`
        (shapley.pruning.lora_scope) says whether LoRA rank pairs are ranked across all adapters or
        within each; families without adapters ignore it."""

    @abstractmethod
    def save_pretrained(self, path: str | Path) -> None:
        """Write the model to a directory in diffusers layout, with family.json."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, path: str | Path) -> DiffusionModel:
        """Load a model written by `save_pretrained`."""

    def write_family(self, path: str | Path, **extra: Any) -> None:
        """family.json: the family's name and what loading needs beyond the saved weights."""
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / FAMILY_FILE).write_text(json.dumps({"family": self.family, **extra}, indent=2))


def read_family(path: str | Path) -> dict:
    """The family.json of a saved model; a model saved before families existed is a pixel one."""
    file = Path(path) / FAMILY_FILE
    return json.loads(file.read_text()) if file.is_file() else {"family": "pixel"}


@torch.no_grad()
def encode_all(model: DiffusionModel, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Every image in the diffusion space, once (the encoder of a latent family is frozen)."""
    return torch.cat([model.encode(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def conditioner(model: DiffusionModel, captions: Sequence[str] | None) -> Callable[[torch.Tensor], Any]:
    """idx -> the conditioning of those images (None for unconditional families or no captions)."""
    if model.prompts is None:
        return lambda idx: None
    if captions is None:
        return lambda idx: model.condition([""] * len(idx))
    table = np.asarray(captions, dtype=object)
    return lambda idx: model.condition(list(table[idx.cpu().numpy()]))
