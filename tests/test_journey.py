"""Journey-TRAK: the stored DDIM trajectory, its featurizer against a plain loop, its workflow stage."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from diffusers.schedulers.scheduling_ddim import DDIMScheduler

from diffattr.config import validate
from diffattr.errors import InputError
from diffattr.gradients import (
    FeaturizerSpec,
    denoised_estimate,
    featurize,
    featurize_trajectory,
    make_projector,
    trajectory_steps,
)
from diffattr.outputs import evenly_spaced_timesteps
from diffattr.sampling import ddim_sample, ddim_trajectory, initial_noise
from diffattr.store import read_arrays
from tests.workflow_helpers import (
    ROOT,
    TINY,
    make_workspace,
    planned_jobs,
    snakemake,
)

SEEDS = np.array([3, 11, 5])


def test_stored_trajectory_is_the_ddim_run_done_by_hand(tiny_model):
    """x_t fed to each step, the eps predicted there and the final x_0 equal a hand-written DDIM loop
    (one seed at a time, so up to the float rounding of batched convolutions)."""
    images, trajectory = ddim_trajectory(tiny_model, SEEDS, 4, 0.0, batch_size=2)
    assert np.array_equal(images, ddim_sample(tiny_model, SEEDS, 4, 0.0, batch_size=2))
    ddim = DDIMScheduler.from_config(tiny_model.scheduler.config)
    ddim.set_timesteps(4)
    assert np.array_equal(trajectory["timesteps"], ddim.timesteps.numpy())
    for i, seed in enumerate(SEEDS):
        x = initial_noise(np.array([seed]), tiny_model.latent_shape)
        with torch.no_grad():
            for s, t in enumerate(ddim.timesteps):
                np.testing.assert_allclose(trajectory["latents"][i, s], x[0].numpy(), atol=1e-4)
                eps = tiny_model.unet(x, t[None]).sample
                np.testing.assert_allclose(trajectory["predicted_noise"][i, s], eps[0].numpy(), atol=1e-4)
                x = ddim.step(eps, t, x, eta=0.0).prev_sample
        np.testing.assert_allclose(trajectory["final"][i], x[0].numpy(), atol=1e-4)


def test_trajectory_steps_are_evenly_spaced_with_both_ends():
    assert trajectory_steps(50, 10).tolist() == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49]
    assert trajectory_steps(5, 0).tolist() == trajectory_steps(5, 9).tolist() == [0, 1, 2, 3, 4]


# The output functions by hand: the MSE against the fixed noise, and one that ignores it.
HAND_OUTPUTS = {
    "loss": lambda pred, eps: (pred - eps).pow(2).mean(),
    "squared_norm": lambda pred, eps: pred.pow(2).mean(),
}


def plain_loop_feature(model, trajectory, i, output, steps, noise_seed, projector):
    """Sample i's feature by hand: at each kept step, the DDIM step's own x0 estimate from the stored
    x_t and eps_hat, noised again with the seeded noise of t; one backward per step, then averaged."""
    params = model.trainable_parameters()
    ddim = DDIMScheduler.from_config(model.scheduler.config)
    ddim.set_timesteps(len(trajectory["timesteps"]))
    keep = trajectory_steps(len(trajectory["timesteps"]), steps)
    total = [torch.zeros_like(p) for p in params]
    for s in keep:
        t = int(trajectory["timesteps"][s])
        x_t = torch.from_numpy(trajectory["latents"][i, s])[None]
        eps_hat = torch.from_numpy(trajectory["predicted_noise"][i, s])[None]
        x0_hat = ddim.step(eps_hat, t, x_t, eta=0.0).pred_original_sample
        eps = torch.randn(x_t.shape[1:], generator=torch.Generator().manual_seed(noise_seed * 1000 + t))[None]
        abar = model.scheduler.alphas_cumprod[t]
        x_noised = abar.sqrt() * x0_hat + (1 - abar).sqrt() * eps
        value = HAND_OUTPUTS[output](model.unet(x_noised, torch.tensor([t])).sample, eps)
        grads = torch.autograd.grad(value, params)
        total = [a + g / len(keep) for a, g in zip(total, grads, strict=True)]
    return projector.project(torch.cat([g.reshape(-1) for g in total])[None]).numpy()[0]


@pytest.mark.parametrize(("output", "steps"), [("loss", 3), ("squared_norm", 0)])
def test_trajectory_features_equal_plain_loop(tiny_model, output, steps):
    """Journey-TRAK's features against an independent per-sample loop, with a non-zero noise seed."""
    _, trajectory = ddim_trajectory(tiny_model, SEEDS, 5, 0.0, batch_size=3)
    spec = FeaturizerSpec(output, timesteps=10, dim=32, projection="gaussian", seed=0)
    tiny_model.unet.eval()
    projector = make_projector(tiny_model, spec)
    fast = featurize_trajectory(tiny_model, trajectory, spec, steps, projector, noise_seed=2)
    for i in range(len(SEEDS)):
        slow = plain_loop_feature(tiny_model, trajectory, i, output, steps, 2, projector)
        np.testing.assert_allclose(fast[i], slow, rtol=1e-4, atol=1e-5)
    assert np.abs(fast).max() > 0


def test_denoised_estimate_is_x0_when_the_predicted_noise_is_the_true_noise(tiny_model):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps by hand in float64: eps_hat = eps gives back x0, and
    the scheduler's clip_sample (on in the tiny model) clips an x0 outside [-1, 1] as the DDIM step does."""
    timesteps = torch.tensor([999, 500, 0])
    abar = tiny_model.scheduler.alphas_cumprod.double()[timesteps].view(1, 3, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 1, 8, 8, generator=generator, dtype=torch.float64) * 2 - 1
    eps = torch.randn(2, 3, 1, 8, 8, generator=generator, dtype=torch.float64)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    torch.testing.assert_close(denoised_estimate(tiny_model, x_t, eps, timesteps), x0, rtol=0, atol=1e-12)
    x_t = abar.sqrt() * 3 * x0 + (1 - abar).sqrt() * eps
    clipped = (3 * x0).clamp(-1, 1)
    torch.testing.assert_close(
        denoised_estimate(tiny_model, x_t, eps, timesteps), clipped, rtol=0, atol=1e-12
    )


def test_exact_run_gives_the_train_feature_of_its_sample(tiny_model, tiny_images):
    """A run whose predicted noise is exact at the featurizer's timesteps: each x0_hat is the sample, so
    its Journey-TRAK feature is the sample's train feature (same fixed noises, same projection)."""
    spec = FeaturizerSpec("loss", timesteps=4, dim=32, projection="gaussian", seed=0)
    timesteps = torch.from_numpy(evenly_spaced_timesteps(4, 1000)).flip(0)
    abar = tiny_model.scheduler.alphas_cumprod[timesteps].view(1, 4, 1, 1, 1)
    eps = torch.randn(len(tiny_images), 4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    trajectory = {
        "latents": (abar.sqrt() * tiny_images[:, None] + (1 - abar).sqrt() * eps).numpy(),
        "predicted_noise": eps.numpy(),
        "timesteps": timesteps.numpy(),
    }
    tiny_model.unet.eval()
    projector = make_projector(tiny_model, spec)
    journey = featurize_trajectory(tiny_model, trajectory, spec, 0, projector, noise_seed=1)
    train = featurize(tiny_model, tiny_images, spec, batch_size=6, noise_seed=1, projector=projector)
    np.testing.assert_allclose(journey, train, rtol=1e-4, atol=1e-5)


def test_config_checks_name_the_key():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["methods"]["J"] = {"kind": "journey_trak"}
    with pytest.raises(InputError, match=r"^config key 'methods\.J\.featurizer'"):
        validate(json.loads(json.dumps(config)))
    config["methods"]["J"] = {"kind": "journey_trak", "featurizer": "das"}  # timestep-normalised
    with pytest.raises(InputError, match=r"^config key 'featurizers\.das\.normalize_timesteps'"):
        validate(json.loads(json.dumps(config)))


def only_methods(workdir, methods: dict) -> None:
    """Replace the workspace's methods (make_workspace merges dicts into the default's methods) and turn
    off the counterfactual, whose methods may be gone."""
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["methods"] = methods
    config["counterfactual"]["enabled"] = False
    path.write_text(yaml.safe_dump(config))


def test_default_jobs_store_no_trajectory(tmp_path):
    workdir = make_workspace(tmp_path / "w", TINY)
    only_methods(workdir, {"TRAK": {"kind": "trak", "featurizer": "trak"}})
    jobs = planned_jobs(workdir, "results/tiny/samples/full.zarr", "--forceall")
    assert jobs == {"generate": 1, "train_full": 1, "prepare_data": 1}
    result = snakemake(workdir, "-n", "--forceall", "results/tiny/samples/full_trajectory.zarr", check=False)
    assert result.returncode != 0  # no rule makes it without a Journey-TRAK method


@pytest.mark.slow
def test_tiny_workflow_writes_gen_scores_and_a_gen_lds_row_only(tiny_run):
    """The tiny run (the embedded default's methods, Journey-TRAK among them) stores the DDIM trajectories
    and scores Journey-TRAK on generated targets only."""
    out = tiny_run / "results" / "tiny"
    steps = TINY["generate"]["num_inference_steps"]  # fewer than the method's 10: all of them
    trajectory = read_arrays(out / "samples" / "full_trajectory.zarr")
    assert trajectory["latents"].shape == (TINY["generate"]["num_images"], steps, 1, 8, 8)
    scores = read_arrays(out / "scores" / "Journey-TRAK" / "gen.zarr")["scores"]
    assert scores.shape == (TINY["generate"]["num_images"], TINY["data"]["n_train"])
    assert np.isfinite(scores).all()
    assert not (out / "scores" / "Journey-TRAK" / "val.zarr").exists()
    lds = pd.read_csv(out / "metrics" / "lds.csv")
    assert lds.loc[lds["method"] == "Journey-TRAK", "split"].tolist() == ["gen"]
    # its target features differ from TRAK's, whose train features it shares
    trak = read_arrays(out / "scores" / "TRAK" / "gen.zarr")["scores"]
    assert not np.allclose(scores, trak)
