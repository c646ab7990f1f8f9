"""The checkpoints a training run saved (training.json), read without importing torch (TracIn, ReTrac)."""

from __future__ import annotations

import json
from pathlib import Path

from diffattr.errors import InputError


def saved_checkpoint(model_dir: str | Path, index: int) -> tuple[Path, float]:
    """The index-th checkpoint of a trained model directory and the learning rate of its step."""
    record = Path(model_dir) / "training.json"
    if not record.is_file():
        raise InputError(f"no training record {record}")
    checkpoints = json.loads(record.read_text())["checkpoints"]
    if not 0 <= index < len(checkpoints):
        raise InputError(
            f"{record} lists {len(checkpoints)} checkpoints, not checkpoint {index} (train.checkpoints)"
        )
    entry = checkpoints[index]
    return Path(model_dir) / "checkpoints" / entry["path"], float(entry["lr"])
