"""Counterfactual evaluation: which images are removed, the distances, the summary, and that retraining
with nothing removed reproduces the full model's generated image (same seed, same schedule)."""

import numpy as np
import pandas as pd
import pytest
import torch

from diffattr.counterfactual import (
    counterfactual_targets,
    pixel_l2,
    removed_images,
    retrain_and_regenerate,
    summarize,
)
from diffattr.errors import InputError
from diffattr.metrics import bootstrap_ci
from diffattr.sampling import ddim_sample
from tests.conftest import TINY_MODEL

SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
TRAIN = {
    "steps": 4,
    "epochs": None,
    "batch_size": 4,
    "lr": 1e-3,
    "betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "lr_schedule": "constant",
    "warmup_fraction": 0.0,
    "ema": True,
    "ema_max_decay": 0.995,
    "checkpoints": 1,
}
GENERATE = {"num_inference_steps": 3, "eta": 0.0}


def test_removes_exactly_the_top_k_scores():
    scores = np.array([0.5, -1.0, 3.0, 0.0, 2.0, 0.1])
    assert removed_images(scores, 6, 3).tolist() == [0, 2, 4]
    # only 4 positive scores: the zero fills the fifth place, the negative one stays
    assert removed_images(scores, 6, 5).tolist() == [0, 2, 3, 4, 5]


def test_random_removal_is_seeded_and_has_the_size_asked():
    a, b = removed_images(None, 50, 10, seed=3), removed_images(None, 50, 10, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 10
    assert not np.array_equal(a, removed_images(None, 50, 10, seed=4))
    with pytest.raises(InputError, match="counterfactual.remove"):
        removed_images(None, 10, 10, seed=0)


def test_targets_are_the_first_reported_ones():
    heldout = np.array([True, False, False, True, False])
    assert counterfactual_targets(heldout, 2).tolist() == [1, 2]
    with pytest.raises(InputError, match="counterfactual.num_targets"):
        counterfactual_targets(heldout, 4)


def test_pixel_l2_on_the_minus_one_one_range():
    a = np.zeros((2, 1, 2, 2), np.uint8)
    b = np.full((2, 1, 2, 2), 255, np.uint8)
    b[1] = 0
    # 4 pixels, each differing by 2 on [-1, 1]: sqrt(4 * 4) = 4
    assert pixel_l2(a, b) == pytest.approx([4.0, 0.0])


def test_summary_is_the_mean_per_method_with_the_bootstrap_ci():
    per_target = pd.DataFrame(
        {
            "method": ["A", "A", "A", "random", "random"],
            "removed": [3, 2, 3, 3, 3],
            "pixel_l2": [1.0, 2.0, 4.0, 0.5, 1.5],
        }
    )
    summary = summarize(per_target, ["pixel_l2"], 100, 0.9, 0).set_index("method")
    assert summary.loc["A", "pixel_l2"] == pytest.approx(7 / 3)
    assert summary.loc["random", "n_targets"] == 2
    low, high = bootstrap_ci(np.array([1.0, 2.0, 4.0]), 100, 0.9, 0)
    assert (summary.loc["A", "pixel_l2_ci_low"], summary.loc["A", "pixel_l2_ci_high"]) == (low, high)


def test_retraining_with_nothing_removed_regenerates_the_original_image():
    images = (
        (torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    )
    keep = np.ones(8, bool)
    args = (images, keep, TINY_MODEL, SCHEDULER, TRAIN, GENERATE, 0, 12345, torch.device("cpu"))
    model, _, image = retrain_and_regenerate(*args)
    original = ddim_sample(model, np.array([7, 12345]), 3, 0.0, 2)[1]  # in a batch, as generate does
    assert np.array_equal(image, original)
    _, _, again = retrain_and_regenerate(*args)
    assert np.array_equal(image, again)
    keep[:3] = False
    _, _, changed = retrain_and_regenerate(images, keep, *args[2:])
    assert not np.array_equal(image, changed)


def test_report_section_shows_the_summary_and_the_figure(tmp_path):
    from pathlib import Path

    from diffattr.counterfactual import counterfactual_figure
    from diffattr.report import Report, counterfactual_section

    per_target = pd.DataFrame({"method": ["A", "random"], "removed": [3, 3], "pixel_l2": [2.0, 1.0]})
    per_target.to_csv(tmp_path / "counterfactual.csv", index=False)
    summarize(per_target, ["pixel_l2"], 20, 0.9, 0).to_csv(tmp_path / "summary.csv", index=False)
    images = np.zeros((1, 1, 4, 4), np.uint8)
    counterfactual_figure(
        images,
        {"A": images, "random": images},
        {"A": np.ones(1), "random": np.ones(1)},
        tmp_path / "report" / "figures" / "counterfactual.png",
    )
    inputs = {
        "counterfactual": str(tmp_path / "counterfactual.csv"),
        "counterfactual_summary": str(tmp_path / "summary.csv"),
    }
    section = counterfactual_section(Report(Path(tmp_path / "report"), inputs, {}, {}))
    assert "figures/counterfactual.png" in section.body and "pixel_l2_ci_low" in section.body
    assert counterfactual_section(Report(Path(tmp_path / "report"), {}, {}, {})) is None


def test_config_checks_of_the_counterfactual_name_the_key():
    import yaml

    from diffattr.config import validate
    from tests.workflow_helpers import ROOT

    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    for change, key in [
        ({"remove": 10_000}, "counterfactual.remove"),
        ({"methods": ["nope"]}, "counterfactual.methods"),
        ({"num_targets": 1000}, "counterfactual.num_targets"),
    ]:
        config = {**base, "counterfactual": {**base["counterfactual"], **change}}
        with pytest.raises(InputError, match=key.replace(".", r"\.")):
            validate(config)
    with pytest.raises(InputError, match="methods.random"):
        validate({**base, "methods": {**base["methods"], "random": {"kind": "pixel"}}})
