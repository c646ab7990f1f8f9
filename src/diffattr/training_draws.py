"""The (timestep, noise, flip) each training sample last had: what Diffusion-TracIn and ReTrac take a
training sample's gradient at (Xie et al.: "the timestep it was trained on"), saved beside each checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffattr.errors import InputError

FILENAME = "training_draws.safetensors"


@dataclass
class TrainingDraws:
    """Per training sample (in the order of the data trained on): the timestep `t`, the `noise` and the
    horizontal `flip` of its most recent training step, and whether it has had one (`seen`)."""

    t: torch.Tensor  # (N,) int64
    noise: torch.Tensor  # (N, *latent) float32
    flip: torch.Tensor  # (N,) bool
    seen: torch.Tensor  # (N,) bool

    @classmethod
    def empty(cls, n: int, latent_shape: tuple[int, ...]) -> TrainingDraws:
        return cls(
            torch.zeros(n, dtype=torch.int64),
            torch.zeros((n, *latent_shape)),
            torch.zeros(n, dtype=torch.bool),
            torch.zeros(n, dtype=torch.bool),
        )

    def record(self, idx: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, flip: torch.Tensor) -> None:
        """The draws of one training step's batch `idx` replace those samples' earlier ones."""
        idx = idx.cpu()
        self.t[idx], self.noise[idx] = t.cpu(), noise.detach().cpu().float()
        self.flip[idx], self.seen[idx] = flip.cpu(), True

    def save(self, folder: Path) -> None:
        save_file(
            {"t": self.t, "noise": self.noise, "flip": self.flip, "seen": self.seen},
            str(Path(folder) / FILENAME),
        )

    @classmethod
    def load(cls, folder: str | Path) -> TrainingDraws:
        path = Path(folder) / FILENAME
        if not path.is_file():
            raise InputError(
                f"no {path}: tracin / retrac take train gradients at the training draws that training "
                "saves with each checkpoint (train.checkpoints): retrain, or use the *_averaged kinds"
            )
        arrays = load_file(str(path))
        return cls(arrays["t"], arrays["noise"], arrays["flip"], arrays["seen"])

    def __getitem__(self, rows: slice) -> TrainingDraws:
        return TrainingDraws(self.t[rows], self.noise[rows], self.flip[rows], self.seen[rows])
