"""Counterfactual evaluation (D-TRAK's protocol): remove a target's top-scored training images, retrain
from the same seed, regenerate from the target's own seed, and measure how far the image moved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from diffattr.errors import InputError
from diffattr.metrics import bootstrap_ci

RANDOM = "random"


def counterfactual_targets(heldout: np.ndarray, count: int) -> np.ndarray:
    """Indices of the first `count` generated targets not held out for tuning (the reported ones)."""
    reported = np.flatnonzero(~np.asarray(heldout, bool))
    if count > len(reported):
        raise InputError(
            f"config key 'counterfactual.num_targets': {count} requested, only {len(reported)} "
            "generated targets are reported (not held out)"
        )
    return reported[:count]


def removed_images(
    scores: np.ndarray | None, n_train: int, remove: int, seed: int | None = None
) -> np.ndarray:
    """Training indices to remove, exactly `remove` of them, sorted: the highest scores of one target (when
    fewer than `remove` scores are positive, the highest non-positive ones fill the count; the per-target
    table says how many were positive), or (scores None, the random baseline) drawn uniformly with `seed`."""
    if remove >= n_train:
        raise InputError(
            f"config key 'counterfactual.remove': {remove} is not below the {n_train} training images"
        )
    if scores is None:
        return np.sort(np.random.default_rng(seed).choice(n_train, size=remove, replace=False))
    scores = np.asarray(scores, np.float64)
    if scores.shape != (n_train,):
        raise InputError(f"scores of one target have shape {scores.shape}, expected ({n_train},)")
    return np.sort(np.argsort(-scores, kind="stable")[:remove])


def retrain_and_regenerate(
    images: np.ndarray,
    keep: np.ndarray,
    model_config: dict,
    scheduler_config: dict,
    train_config: dict,
    generate_config: dict,
    seed: int,
    image_seed: int,
    device,
):
    """Train a fresh model on the kept images exactly as the full model was trained (same seed, same
    schedule, no checkpoints), then regenerate one image from `image_seed`. Returns (model, record, image).

    With every image kept this reproduces the full model and its generated image.
    """
    import torch

    from diffattr.families import build_model
    from diffattr.sampling import ddim_sample
    from diffattr.training import train

    kept = torch.from_numpy(np.ascontiguousarray(images[keep])).float().div(127.5).sub(1.0)
    model = build_model(model_config, scheduler_config, kept.shape[1:], seed)
    record = train(model, kept, {**train_config, "checkpoints": 0}, seed=seed, device=device)
    image = ddim_sample(
        model, np.array([image_seed]), generate_config["num_inference_steps"], generate_config["eta"], 1
    )
    return model, record, image[0]


def pixel_l2(original: np.ndarray, counterfactual: np.ndarray) -> np.ndarray:
    """Per-image L2 distance between uint8 images mapped to [-1, 1] (D-TRAK's pixel distance)."""

    def unit_range(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float64) / 127.5 - 1.0

    return np.linalg.norm(unit_range(original) - unit_range(counterfactual), axis=1)


def summarize(
    per_target: pd.DataFrame, metrics: list[str], n_boot: int, level: float, seed: int
) -> pd.DataFrame:
    """Mean of each metric per method over targets, with a bootstrap CI over targets."""
    rows = []
    for method, group in per_target.groupby("method", sort=False):
        row = {"method": method, "n_targets": len(group), "removed_mean": float(group["removed"].mean())}
        for metric in metrics:
            values = group[metric].to_numpy(np.float64)
            low, high = bootstrap_ci(values, n_boot, level, seed)
            row.update(
                {metric: float(np.nanmean(values)), f"{metric}_ci_low": low, f"{metric}_ci_high": high}
            )
        rows.append(row)
    return pd.DataFrame(rows)


def counterfactual_figure(
    originals: np.ndarray,
    counterfactuals: dict[str, np.ndarray],
    distances: dict[str, np.ndarray],
    path: str | Path,
) -> None:
    """One row per target: the original generated image, then each method's regenerated image with its
    pixel L2 distance to the original."""
    from diffattr.report.figures import plt, save_figure

    def show(ax, image: np.ndarray) -> None:
        ax.imshow(image.transpose(1, 2, 0).squeeze(), cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])

    methods = list(counterfactuals)
    cols = 1 + len(methods)
    fig, axes = plt.subplots(
        len(originals), cols, figsize=(1.2 * cols, 1.25 * len(originals) + 0.5), squeeze=False
    )
    for row, original in enumerate(originals):
        show(axes[row, 0], original)
        for col, method in enumerate(methods, start=1):
            show(axes[row, col], counterfactuals[method][row])
            axes[row, col].set_xlabel(f"L2 {distances[method][row]:.2f}", fontsize=7)
    axes[0, 0].set_title("original", fontsize=8)
    for col, method in enumerate(methods, start=1):
        axes[0, col].set_title(method, fontsize=8)
    fig.suptitle("Regenerated after removing each method's top-scored training images", fontsize=9)
    save_figure(fig, path, dpi=100)
