"""The checkpoints a training run saved (training.json), read without importing torch (TracIn, ReTrac)."""

from __future__ import annotations

import json
from pathlib import Path

from diffattr.errors import InputError

# How TracIn / ReTrac weight a checkpoint (method option checkpoint_weights): the lrs summed over the
# steps since the previous checkpoint (Pruthi et al.), the lr of the checkpoint's step, or 1.
CHECKPOINT_WEIGHTS = ("lr_sum", "lr", "equal")


def _entry(model_dir: str | Path, index: int) -> tuple[Path, dict]:
    """training.json's path and its index-th checkpoint entry."""
    record = Path(model_dir) / "training.json"
    if not record.is_file():
        raise InputError(f"no training record {record}")
    checkpoints = json.loads(record.read_text())["checkpoints"]
    if not 0 <= index < len(checkpoints):
        raise InputError(
            f"{record} lists {len(checkpoints)} checkpoints, not checkpoint {index} (train.checkpoints)"
        )
    return record, checkpoints[index]


def saved_checkpoint(model_dir: str | Path, index: int) -> Path:
    """The index-th checkpoint of a trained model directory."""
    return Path(model_dir) / "checkpoints" / _entry(model_dir, index)[1]["path"]


def checkpoint_weight(model_dir: str | Path, index: int, weighting: str) -> float:
    """The index-th checkpoint's weight in TracIn's sum under `weighting` (one of CHECKPOINT_WEIGHTS)."""
    if weighting not in CHECKPOINT_WEIGHTS:
        raise InputError(f"checkpoint_weights {weighting!r} is not one of {', '.join(CHECKPOINT_WEIGHTS)}")
    record, entry = _entry(model_dir, index)
    if weighting == "equal":
        return 1.0
    if weighting not in entry:
        raise InputError(
            f"{record}: checkpoint {index} has no {weighting!r} (checkpoint_weights: {weighting}); "
            "retrain the model or choose another checkpoint_weights"
        )
    return float(entry[weighting])
