"""DAS, influence variants, TracIn / ReTrac and the dominating-norm diagnostic against direct computations."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from diffattr.attribution import GradientInputs, TrakScorer
from diffattr.checkpoints import CHECKPOINT_WEIGHTS, checkpoint_weight, saved_checkpoint
from diffattr.config import validate
from diffattr.das import das_score_function, das_scores, residual_weights
from diffattr.dominating import dominating_norm
from diffattr.errors import InputError
from diffattr.gradients import FeaturizerSpec, TimestepAveragedGradient, featurize_at_draws, make_projector
from diffattr.influence import (
    gradient_similarity,
    relative_influence,
    renormalized_influence,
    tracin,
)
from diffattr.models import PixelDiffusion
from diffattr.outputs import OUTPUT_FUNCTIONS, evenly_spaced_timesteps, fixed_noise, per_timestep_losses
from diffattr.report import dominating_norm_figure
from diffattr.store import write_arrays, write_npz
from diffattr.training import train
from diffattr.training_draws import TrainingDraws
from tests.test_models import TRAIN

ROOT = Path(__file__).resolve().parents[1]


def _shards(tmp_path, phi, sizes):
    paths, start = [], 0
    for i, size in enumerate(sizes):
        path = tmp_path / f"{i}.zarr"
        write_arrays(path, {"features": phi[start : start + size].astype(np.float32)})
        paths.append(path)
        start += size
    return paths


@pytest.fixture(params=["dual", "primal"])
def case(request, tmp_path):
    rng = np.random.default_rng(0)
    n, k = (7, 12) if request.param == "dual" else (12, 5)
    phi = rng.normal(size=(n, k)).astype(np.float32).astype(np.float64)
    targets = rng.normal(size=(3, k))
    scorer = TrakScorer(_shards(tmp_path, phi, [n // 2, n - n // 2]), request.param)
    return scorer, phi, targets


def _direct(phi, lam_rel):
    lam = lam_rel * np.mean((phi**2).sum(1))
    return np.linalg.inv(phi.T @ phi + lam * np.eye(phi.shape[1]))


def test_das_weights_and_leverage_by_a_plain_loop(case):
    scorer, phi, targets = case
    errors = np.random.default_rng(1).uniform(0.1, 2.0, size=(len(phi), 5))
    inv = _direct(phi, 0.1)
    weights = residual_weights(errors)
    for leverage in (False, True):
        for squared in (False, True):
            got = das_scores(scorer, targets, 0.1, weights, leverage, squared)
            for i in range(len(phi)):
                roots = [np.sqrt(e) for e in errors[i]]
                w = (sum(roots) / len(roots)) / np.sqrt(sum(r * r for r in roots))
                h = phi[i] @ inv @ phi[i]
                for j in range(len(targets)):
                    expected = targets[j] @ inv @ phi[i] * w / ((1 - h) ** 2 if leverage else 1)
                    expected = expected**2 if squared else expected
                    assert got[j, i] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_das_squared_squares_the_whole_weighted_score(tmp_path):
    phi = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [1.0, 1.0, 0.0], [2.0, -1.0, 1.0]])
    targets = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]])
    errors = np.array([[0.25, 1.0], [1.0, 1.0], [0.01, 0.04], [4.0, 0.0]])
    write_npz(tmp_path / "residuals.npz", errors=errors)
    inputs = GradientInputs(_shards(tmp_path, phi, [2, 2]), "primal", tmp_path / "residuals.npz")
    method = {"kind": "das", "squared": True, "leverage": False}
    got = das_score_function(method, inputs)(targets, 0.1)
    # D-TRAK score t_j^T (Phi^T Phi + lam I)^-1 phi_i, lam = 0.1 * mean ||phi_i||^2 = 0.1 * 15 / 4
    tau = targets @ np.linalg.solve(phi.T @ phi + 0.375 * np.eye(3), phi.T)
    # w_i = mean of sqrt(e_i) / ||sqrt(e_i)||: roots (0.5, 1), (1, 1), (0.1, 0.2), (2, 0)
    w = np.array([0.75 / np.sqrt(1.25), 1 / np.sqrt(2), 0.15 / np.sqrt(0.05), 0.5])
    assert (tau < 0).any()  # the square discards the sign
    np.testing.assert_allclose(got, (tau * w) ** 2, rtol=1e-6)
    unsquared = das_score_function({**method, "squared": False}, inputs)(targets, 0.1)
    np.testing.assert_allclose(unsquared, tau * w, rtol=1e-6)


def test_relative_and_renormalized_influence_by_the_formula(case):
    scorer, phi, targets = case
    inv = _direct(phi, 0.01)
    tau = targets @ inv @ phi.T
    rows = np.linalg.norm(phi @ inv, axis=1)
    np.testing.assert_allclose(relative_influence(scorer, targets, 0.01), tau / rows, rtol=1e-6)
    np.testing.assert_allclose(
        renormalized_influence(scorer, targets, 0.01), tau / np.linalg.norm(phi, axis=1), rtol=1e-6
    )


def test_gradient_dot_and_cosine():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    np.testing.assert_allclose(gradient_similarity(a, b), a @ b.T)
    cos = [[a[j] @ b[i] / np.linalg.norm(a[j]) / np.linalg.norm(b[i]) for i in range(5)] for j in range(3)]
    np.testing.assert_allclose(gradient_similarity(a, b, cosine=True), cos)


def test_tracin_sum_by_hand_over_two_checkpoints():
    g1 = np.array([[1.0, 0.0], [0.0, 2.0]])  # train gradients at checkpoint 1
    g2 = np.array([[3.0, 4.0], [1.0, 1.0]])
    t1, t2 = np.array([[1.0, 1.0]]), np.array([[0.0, 1.0]])
    # 0.1 * <t1, g1_i> + 0.05 * <t2, g2_i>: sample 0: 0.1*1 + 0.05*4; sample 1: 0.1*2 + 0.05*1
    np.testing.assert_allclose(tracin([(0.1, g1, t1), (0.05, g2, t2)]), [[0.3, 0.25]])
    # ReTrac divides each training gradient by its norm: 0.1*1 + 0.05*4/5; 0.1*1 + 0.05/sqrt(2)
    np.testing.assert_allclose(
        tracin([(0.1, g1, t1), (0.05, g2, t2)], renormalize=True), [[0.14, 0.1 + 0.05 / np.sqrt(2)]]
    )


def test_dominating_norm_counts():
    scores = np.array([[5.0, 1, 4, 0], [5, 4, 0, 1], [0, 5, 4, 1]])
    row = dominating_norm(scores, 2)  # top-2 sets {0,2}, {0,1}, {1,2}
    assert row["distinct"] == 3 and row["distinct_share"] == pytest.approx(3 / 4)
    assert row["most_frequent"] == 0 and row["most_frequent_share"] == pytest.approx(2 / 3)


def test_normalized_featurizer_equals_a_per_timestep_loop(tiny_model, tiny_images):
    spec = FeaturizerSpec(
        "mean", timesteps=5, dim=16, projection="gaussian", seed=0, normalize_timesteps=True
    )
    tiny_model.unet.eval()
    gradient = TimestepAveragedGradient(tiny_model, spec, noise_seed=1, timestep_batch=2)
    params = tiny_model.trainable_parameters()
    rows = []
    for image in tiny_images[:3]:
        expected = 0
        for t in evenly_spaced_timesteps(5, 1000):
            noise = fixed_noise(1, t, tuple(image.shape))[None]
            tt = torch.tensor([int(t)])
            x_t = tiny_model.scheduler.add_noise(image[None], noise, tt)
            value = OUTPUT_FUNCTIONS["mean"](tiny_model.unet(x_t, tt).sample, noise, tt, None)[0]
            g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(value, params)])
            expected = expected + g / g.norm() / 5
        torch.testing.assert_close(gradient(image), expected, rtol=1e-4, atol=1e-6)
        rows.append(expected)
    # several samples' timesteps vmapped together (lanes in chunks of 4, across samples)
    together = TimestepAveragedGradient(tiny_model, spec, noise_seed=1, timestep_batch=4, samples=3)
    torch.testing.assert_close(together.batch(tiny_images[:3]), torch.stack(rows), rtol=1e-4, atol=1e-6)
    assert TimestepAveragedGradient(tiny_model, spec).samples == 51  # 256 // 5: all fit at K = 5


def test_training_errors_by_a_plain_loop(tiny_model, tiny_images):
    tiny_model.unet.eval()
    timesteps = evenly_spaced_timesteps(3, 1000)
    got = per_timestep_losses(tiny_model, tiny_images, timesteps, noise_seed=2, batch_size=4)
    for i, image in enumerate(tiny_images):
        for k, t in enumerate(timesteps):
            noise = fixed_noise(2, t, tuple(image.shape))[None]
            tt = torch.tensor([int(t)])
            with torch.no_grad():
                pred = tiny_model.unet(tiny_model.scheduler.add_noise(image[None], noise, tt), tt).sample
            assert got[i, k] == pytest.approx(float(((pred - noise) ** 2).mean()), rel=1e-5)


def test_saved_checkpoint_reads_path_and_weights(tmp_path):
    record = {
        "checkpoints": [
            {"step": 5, "lr": 0.01, "lr_sum": 0.05, "path": "step5"},
            {"step": 10, "lr": 0.002, "path": "step10"},
        ]
    }
    (tmp_path / "training.json").write_text(json.dumps(record))
    assert saved_checkpoint(tmp_path, 1) == tmp_path / "checkpoints" / "step10"
    weights = {w: checkpoint_weight(tmp_path, 0, w) for w in CHECKPOINT_WEIGHTS}
    assert weights == {"lr_sum": 0.05, "lr": 0.01, "equal": 1.0}
    assert checkpoint_weight(tmp_path, 1, "lr") == 0.002
    with pytest.raises(InputError, match="checkpoint 1 has no 'lr_sum'"):
        checkpoint_weight(tmp_path, 1, "lr_sum")
    with pytest.raises(InputError, match="lists 2 checkpoints"):
        saved_checkpoint(tmp_path, 2)


def test_tracin_under_each_checkpoint_weighting_by_a_double_loop(tmp_path):
    rng = np.random.default_rng(3)
    lrs, lr_sums = [0.004, 0.002, 0.0001], [0.04, 0.03, 0.011]
    record = {
        "checkpoints": [
            {"step": 10 * (c + 1), "lr": lr, "lr_sum": s, "path": f"step{10 * (c + 1)}"}
            for c, (lr, s) in enumerate(zip(lrs, lr_sums, strict=True))
        ]
    }
    (tmp_path / "training.json").write_text(json.dumps(record))
    train = [rng.normal(size=(5, 4)) for _ in lrs]
    targets = [rng.normal(size=(2, 4)) for _ in lrs]
    by_hand = {"lr_sum": lr_sums, "lr": lrs, "equal": [1.0, 1.0, 1.0]}
    for weighting in CHECKPOINT_WEIGHTS:
        for renormalize in (False, True):
            got = tracin(
                [(checkpoint_weight(tmp_path, c, weighting), train[c], targets[c]) for c in range(3)],
                renormalize,
            )
            expected = np.zeros((2, 5))
            for c in range(3):
                for j in range(2):
                    for i in range(5):
                        g = train[c][i] / (np.linalg.norm(train[c][i]) if renormalize else 1.0)
                        expected[j, i] += by_hand[weighting][c] * float(targets[c][j] @ g)
            np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=f"{weighting} {renormalize}")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"methods": {"D": {"kind": "das", "featurizer": "trak"}}}, "featurizers.trak.normalize_timesteps"),
        (
            {"methods": {"T": {"kind": "tracin", "featurizer": "trak"}}, "train": {"checkpoints": 0}},
            "train.checkpoints",
        ),
        ({"methods": {"R": {"kind": "relative_if", "featurizer": "nope"}}}, "methods.R.featurizer"),
        (
            {"methods": {"D": {"kind": "das", "featurizer": "das", "checkpoint_weights": "lr"}}},
            "methods.D.checkpoint_weights",
        ),
        (
            {"methods": {"T": {"kind": "tracin", "featurizer": "tracin", "checkpoint_weights": "sum"}}},
            "methods.T.checkpoint_weights",
        ),
    ],
)
def test_local_methods_config_errors_name_the_key(extra, message):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["methods"].update(extra["methods"])
    config["train"].update(extra.get("train", {}))
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        validate(config)


def test_dominating_norm_figure_has_a_bar_per_method_and_split():
    table = pd.DataFrame(
        [
            {"method": m, "split": s, "distinct_share": 0.5, "most_frequent_share": 0.2}
            for m in ("TRAK", "ReTrac")
            for s in ("val", "gen")
        ]
    )
    fig = dominating_norm_figure(table)
    assert [len(ax.patches) for ax in fig.axes] == [4, 4]


def test_training_saves_each_samples_latest_draw_the_step_loss_recomputes(tiny_model, tiny_images, tmp_path):
    """TracIn's train side: the (t, noise, flip) saved at checkpoint s are the draws of step s, so the loss
    of step s (logged by training) recomputed from them with the weights after step s - 1 matches it."""
    config = {**TRAIN, "steps": 3, "batch_size": len(tiny_images), "ema": False, "checkpoints": 3}
    config.update(random_flip=True, lr_schedule="constant", warmup_fraction=0.0)
    record = train(
        tiny_model, tiny_images, config, seed=0, device=torch.device("cpu"), checkpoint_dir=tmp_path
    )
    logged = dict(record.losses)
    for step in (2, 3):
        before = PixelDiffusion.from_pretrained(tmp_path / f"step{step - 1}")
        draws = TrainingDraws.load(tmp_path / f"step{step}")
        assert bool(draws.seen.all())
        x0 = torch.stack(
            [im.flip(-1) if f else im for im, f in zip(tiny_images, draws.flip.tolist(), strict=True)]
        )
        with torch.no_grad():
            x_t = before.scheduler.add_noise(x0, draws.noise, draws.t)
            loss = torch.nn.functional.mse_loss(before.unet(x_t, draws.t).sample, draws.noise)
        assert float(loss) == pytest.approx(logged[step], rel=1e-5)
    assert draws.flip.any() and not draws.flip.all()  # random flips were drawn and recorded


def test_training_draws_mark_the_samples_not_yet_trained_on(tiny_model, tiny_images, tmp_path):
    config = {**TRAIN, "steps": 3, "batch_size": 2, "ema": False, "checkpoints": 3}
    train(tiny_model, tiny_images, config, seed=0, device=torch.device("cpu"), checkpoint_dir=tmp_path)
    # 6 images, batches of 2 from one permutation: 2, 4, then all 6 trained on
    assert [int(TrainingDraws.load(tmp_path / f"step{s}").seen.sum()) for s in (1, 2, 3)] == [2, 4, 6]


def test_train_features_at_the_training_draws_equal_a_plain_loop(tiny_model, tiny_images):
    spec = FeaturizerSpec("loss", timesteps=10, dim=16, projection="gaussian", seed=0)
    tiny_model.unet.eval()
    gen = torch.Generator().manual_seed(3)
    n = len(tiny_images)
    draws = TrainingDraws(
        t=torch.randint(0, 1000, (n,), generator=gen),
        noise=torch.randn(tiny_images.shape, generator=gen),
        flip=torch.tensor([True, False] * (n // 2)),
        seen=torch.tensor([True] * (n - 1) + [False]),
    )
    projector = make_projector(tiny_model, spec)
    got = featurize_at_draws(tiny_model, tiny_images, draws, spec, projector)
    params = tiny_model.trainable_parameters()
    for i, image in enumerate(tiny_images[: n - 1]):
        x0 = (image.flip(-1) if i % 2 == 0 else image)[None]
        t, noise = draws.t[i : i + 1], draws.noise[i : i + 1]
        pred = tiny_model.unet(tiny_model.scheduler.add_noise(x0, noise, t), t).sample
        g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(((pred - noise) ** 2).mean(), params)])
        np.testing.assert_allclose(got[i], projector.project(g[None]).numpy()[0], rtol=1e-4, atol=2e-5)
    assert not got[n - 1].any()  # not trained on yet: no gradient, no score


def test_a_sample_keeps_the_draw_of_its_latest_step_until_it_is_trained_on_again(
    tiny_model, tiny_images, tmp_path
):
    """Batches of 2 from one permutation of 6: each image is trained on in exactly one of the 3 steps, so
    the draws saved at step 3 hold, for the images of step 1, the very draws saved at step 1."""
    config = {**TRAIN, "steps": 3, "batch_size": 2, "ema": False, "checkpoints": 3, "random_flip": True}
    train(tiny_model, tiny_images, config, seed=0, device=torch.device("cpu"), checkpoint_dir=tmp_path)
    first, last = (TrainingDraws.load(tmp_path / f"step{s}") for s in (1, 3))
    step1 = torch.nonzero(first.seen).flatten()
    assert len(step1) == 2
    assert torch.equal(last.t[step1], first.t[step1]) and torch.equal(last.noise[step1], first.noise[step1])
    assert torch.equal(last.flip[step1], first.flip[step1])
    later = torch.nonzero(~first.seen).flatten()  # trained on at steps 2 and 3: new draws
    assert not torch.equal(last.noise[later], first.noise[later])
