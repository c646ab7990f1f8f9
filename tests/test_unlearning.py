"""Coalition models: every way starts from the right model, trains on the right images, and the empty
coalition is the untrained model."""

import copy

import numpy as np
import pytest
import torch

from diffattr.errors import InputError
from diffattr.outputs import measure_loss
from diffattr.unlearning import coalition_model

CONFIG = {
    "steps": 5,
    "epochs": None,
    "batch_size": 4,
    "lr": 1e-2,
    "betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "lr_schedule": "constant",
    "warmup_fraction": 0.0,
    "ema": False,
    "ema_max_decay": 0.995,
    "checkpoints": 0,
}
CPU = torch.device("cpu")


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.unet.parameters()])


def test_empty_coalition_is_the_untrained_model_for_every_way(tiny_model, tiny_images):
    fresh = copy.deepcopy(tiny_model)
    for how in ("sparse_ft", "ft", "gradient_ascent", "retrain"):
        model, record = coalition_model(
            how, np.zeros(6, bool), tiny_images, fresh, tiny_model, CONFIG, 0, CPU
        )
        assert model is fresh and record.steps == 0 and record.kept_images == 0


def test_fine_tuning_ways_start_from_the_base_and_leave_it_untouched(tiny_model, tiny_images):
    base_before = weights(tiny_model)
    kept = np.array([True, True, True, False, False, False])
    model, record = coalition_model(
        "ft", kept, tiny_images, copy.deepcopy(tiny_model), tiny_model, CONFIG, 0, CPU
    )
    assert record.trained_images == 3 and record.steps == 5
    torch.testing.assert_close(weights(tiny_model), base_before)
    assert 0 < (weights(model) - base_before).abs().max() < 1
    with pytest.raises(InputError, match="needs its base model"):
        coalition_model("sparse_ft", kept, tiny_images, tiny_model, None, CONFIG, 0, CPU)


def test_gradient_ascent_raises_the_loss_on_the_removed_images(tiny_model, tiny_images):
    kept = np.array([True, True, True, False, False, False])
    removed = tiny_images[~kept]

    def loss(model):
        return measure_loss(model, removed, np.array([10, 200, 500, 900]), [0], batch_size=8).mean()

    before = loss(tiny_model)
    model, record = coalition_model(
        "gradient_ascent", kept, tiny_images, tiny_model, tiny_model, CONFIG, 0, CPU
    )
    assert record.trained_images == 3
    assert loss(model) > before


def test_retrain_trains_the_fresh_model_on_the_kept_images_only(tiny_model, tiny_images):
    kept = np.array([False, True, False, True, False, False])
    fresh = copy.deepcopy(tiny_model)
    start = weights(fresh)
    model, record = coalition_model("retrain", kept, tiny_images, fresh, None, CONFIG, 0, CPU)
    assert record.trained_images == 2 and (weights(model) != start).any()


def test_costs_count_one_off_work_and_skip_models_that_trained_on_nothing():
    from diffattr.unlearning import coalition_costs

    records = [
        {"how": "retrain", "trained_images": 10, "steps": 100, "seconds": 10.0, "property_seconds": 2.0},
        {"how": "retrain", "trained_images": 20, "steps": 100, "seconds": 14.0, "property_seconds": 2.0},
        {"how": "retrain", "trained_images": 0, "steps": 0, "seconds": 0.0, "property_seconds": 2.0},
        {"how": "sparse_ft", "trained_images": 10, "steps": 10, "seconds": 1.0, "property_seconds": 2.0},
        {"how": "sparse_ft", "trained_images": 20, "steps": 10, "seconds": 3.0, "property_seconds": 2.0},
    ]
    cost = coalition_costs(records, {"sparse_ft": 8.0}).set_index("how")
    assert cost.loc["retrain", "models"] == 2 and cost.loc["retrain", "seconds"] == 14.0
    assert cost.loc["retrain", "train_seconds"] == 12.0
    assert cost.loc["sparse_ft", "speedup_per_model"] == pytest.approx(14.0 / 4.0)
    assert cost.loc["sparse_ft", "speedup_per_model_training"] == pytest.approx(6.0)
    assert cost.loc["sparse_ft", "total_seconds"] == 8.0 + 3.0 + 5.0
    assert cost.loc["sparse_ft", "speedup_total"] == pytest.approx(28.0 / 16.0)


def test_gradient_ascent_at_the_authors_settings_moves_the_model(tiny_model, tiny_images):
    """Lu et al.'s CIFAR ascent (40 steps, constant lr 1e-4, Adam): the weights and the loss on the removed
    images must both move, or the baseline is the full model under another name."""
    kept = np.array([True, True, True, False, False, False])
    removed = tiny_images[~kept]
    config = {**CONFIG, "steps": 40, "lr": 1e-4, "grad_clip": 1.0}
    before = measure_loss(tiny_model, removed, np.array([10, 200, 500, 900]), [0], batch_size=8).mean()
    model, record = coalition_model(
        "gradient_ascent", kept, tiny_images, tiny_model, tiny_model, config, 0, CPU
    )
    after = measure_loss(model, removed, np.array([10, 200, 500, 900]), [0], batch_size=8).mean()
    assert record.steps == 40
    assert (weights(model) - weights(tiny_model)).abs().max() > 1e-3
    assert after > before * 1.01


def test_random_flip_trains_on_mirrored_images(tiny_model):
    """With train.random_flip, a model trained on left-right asymmetric images also fits their mirror."""
    from diffattr.training import train

    images = -torch.ones(8, 1, 8, 8)
    images[..., :4] = 1.0  # left half white
    losses = {}
    for flip in (False, True):
        model = copy.deepcopy(tiny_model)
        train(model, images, {**CONFIG, "steps": 60, "random_flip": flip}, seed=0, device=CPU)
        losses[flip] = measure_loss(model, images.flip(-1), np.array([100, 300]), [0], batch_size=8).mean()
    assert losses[True] < losses[False]
