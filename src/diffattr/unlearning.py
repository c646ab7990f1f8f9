"""Models of coalitions: what the model would be had it learned only from some contributors.

Four ways (`how`), from cheapest to the gold standard:
  sparse_ft        the pruned model (fine-tuned on all data once) fine-tuned on the coalition's data
  ft               the full model fine-tuned on the coalition's data, without pruning
  gradient_ascent  the full model trained to increase its loss on the removed contributors' data
  retrain          a fresh model trained from scratch on the coalition's data
The empty coalition is the untrained model (it learned from nobody) whatever the way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from diffattr.errors import InputError

if TYPE_CHECKING:
    from diffattr.families.base import DiffusionModel

HOWS = ("sparse_ft", "ft", "gradient_ascent", "retrain")
BASE_MODEL = {"sparse_ft": "pruned", "ft": "full", "gradient_ascent": "full", "retrain": None}


@dataclass
class CoalitionRecord:
    """How a coalition model was made and what it cost."""

    how: str
    kept_images: int
    trained_images: int
    steps: int
    seconds: float


def coalition_model(
    how: str,
    kept: np.ndarray,
    images: torch.Tensor,
    fresh: DiffusionModel | None,
    base: DiffusionModel | None,
    train_config: dict,
    seed: int,
    device: torch.device,
    captions: np.ndarray | None = None,
) -> tuple[DiffusionModel, CoalitionRecord]:
    """The model of the coalition whose images are `images[kept]` (with their `captions`, for
    conditional families); `train_config` is that way's schedule.

    `fresh` is an untrained model (needed by retrain and for the empty coalition); `base` is the model
    a fine-tuning way starts from (the pruned model for sparse_ft, the full model for ft and ascent).
    """
    from diffattr.training import (
        train,
    )  # here: coalition_costs' readers need no diffusers (jobs start faster)

    if how not in HOWS:
        raise InputError(f"config key 'shapley.how': unknown way {how!r} (known: {list(HOWS)})")
    start = time.perf_counter()
    if not kept.any():
        return fresh, CoalitionRecord(how, 0, 0, 0, time.perf_counter() - start)
    rows = ~kept if how == "gradient_ascent" else kept
    if how == "retrain":
        model = fresh
    else:
        if base is None:
            raise InputError(f"shapley.how {how!r} needs its base model ({BASE_MODEL[how]})")
        model = base.copy()
    data = images[rows]
    steps = 0
    if len(data):
        record = train(
            model,
            data,
            train_config,
            seed=seed,
            device=device,
            ascent=how == "gradient_ascent",
            captions=None if captions is None else captions[rows],
        )
        steps = record.steps
    seconds = time.perf_counter() - start
    return model, CoalitionRecord(how, int(kept.sum()), len(data), steps, seconds)


def coalition_costs(records: list[dict], one_off: dict[str, float]) -> pd.DataFrame:
    """Per way, over the fit coalitions' models that trained on something: how many, their mean steps,
    the mean whole cost of one coalition (`seconds`: making the model + generating its images +
    measuring the property, `property_seconds` in a record) and of its training alone
    (`train_seconds`), the way's one-off cost (the full model; plus pruning and fine-tuning for
    sparse_ft), the total (one-off + every coalition's whole cost), and the speed-ups against
    retraining: per coalition (whole and training only) and in total."""
    frame = pd.DataFrame(records)
    frame = frame[frame.trained_images > 0].copy()
    if "property_seconds" not in frame:
        frame["property_seconds"] = 0.0
    frame["whole"] = frame["seconds"] + frame["property_seconds"].fillna(0.0)
    cost = (
        frame.groupby("how")
        .agg(
            models=("whole", "size"),
            steps=("steps", "mean"),
            seconds=("whole", "mean"),
            train_seconds=("seconds", "mean"),
        )
        .reset_index()
    )
    totals = frame.groupby("how")["whole"].sum()
    cost["one_off_seconds"] = [one_off.get(how, 0.0) for how in cost.how]
    cost["total_seconds"] = [totals[how] + one_off.get(how, 0.0) for how in cost.how]
    if "retrain" in set(cost.how):
        gold = cost.set_index("how").loc["retrain"]
        cost["speedup_per_model"] = gold["seconds"] / cost["seconds"]
        cost["speedup_per_model_training"] = gold["train_seconds"] / cost["train_seconds"]
        cost["speedup_total"] = gold["total_seconds"] / cost["total_seconds"]
    return cost
