"""Bring your own model: a trained DDPM or LDM folder (model.pretrained of the pixel and latent families)
is the attributed full model; retrains take its architecture and schedule; bad folders stop the run with
one line before any job. The workflow round trip: a finished run's full model, attributed as one's own,
gives the same TRAK scores."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from diffusers import DDIMScheduler, DDPMPipeline

from diffattr.config import validate
from diffattr.errors import InputError
from diffattr.families import build_model, load_own_model
from diffattr.families.latent import latent_shape_of, load_autoencoder
from diffattr.models import build_unet
from diffattr.preflight import check_config, check_machine
from diffattr.pretrained import latent_shape
from diffattr.store import read_arrays
from tests.conftest import TINY_MODEL
from tests.test_bad_inputs import default_config, one_line
from tests.tiny_sd import tiny_autoencoder, tiny_vq_autoencoder
from tests.workflow_helpers import ROOT, TINY, deep_update, make_workspace, planned_jobs, snakemake

SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
WIDER = {**TINY_MODEL, "block_out_channels": [4, 8]}  # not the config's architecture: retrains follow it


def ddpm_folder(path, channels=1, size=8, model=WIDER):
    """A user's DDPM as diffusers saves a pipeline: unet/ (safetensors), scheduler/ (DDIM's config here)."""
    unet = build_unet(model, sample_size=size, channels=channels, seed=3)
    scheduler = DDIMScheduler(num_train_timesteps=500, beta_schedule="scaled_linear")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path, safe_serialization=True)
    return path


def own_config(folder, **model) -> dict:
    """The default config attributing the model at `folder`: TRAK only, no counterfactual or contributors."""
    config = default_config()
    config["model"].update({"pretrained": str(folder), **model})
    config["methods"] = {"TRAK": {"kind": "trak", "featurizer": "trak"}}
    config["counterfactual"]["enabled"] = False
    config["shapley"]["enabled"] = False
    config = validate(config)
    check_config(config, ROOT / "results", ROOT)
    return config


def test_a_ddpm_pipeline_folder_loads_as_the_full_model(tmp_path):
    folder = ddpm_folder(tmp_path / "ddpm")
    model = load_own_model({"family": "pixel", "pretrained": str(folder)}, (1, 8, 8))
    saved = DDPMPipeline.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    for mine, theirs in zip(model.unet.parameters(), saved.unet.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert model.scheduler.config.num_train_timesteps == 500
    torch.testing.assert_close(model.scheduler.betas, saved.scheduler.betas)


def test_a_saved_latent_model_loads_with_its_latent_scale(tmp_path):
    vae = str(tiny_autoencoder(tmp_path / "vae", channels=1))
    trained = build_model(
        {**TINY_MODEL, "family": "latent", "vae": vae, "latent_scale": 0.5}, SCHEDULER, (1, 8, 8)
    )
    trained.save_pretrained(tmp_path / "ldm")
    model = load_own_model({"family": "latent", "vae": vae, "pretrained": str(tmp_path / "ldm")}, (1, 8, 8))
    assert model.latent_scale == 0.5  # the folder's family.json, model.latent_scale unset
    for mine, theirs in zip(model.unet.parameters(), trained.unet.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_retrains_of_an_own_model_take_its_architecture_and_schedule(tmp_path):
    folder = ddpm_folder(tmp_path / "ddpm")
    config = {**TINY_MODEL, "pretrained": str(folder)}  # the config's architecture is ignored
    first, again = (build_model(config, SCHEDULER, (1, 8, 8), seed=0) for _ in range(2))
    other = build_model(config, SCHEDULER, (1, 8, 8), seed=1)
    assert list(first.unet.config.block_out_channels) == WIDER["block_out_channels"]
    assert first.scheduler.config.num_train_timesteps == 500
    assert torch.equal(first.unet.conv_in.weight, again.unet.conv_in.weight)  # seeded fresh weights
    assert not torch.equal(first.unet.conv_in.weight, other.unet.conv_in.weight)
    trained = load_own_model({"family": "pixel", "pretrained": str(folder)}, (1, 8, 8))
    assert not torch.equal(first.unet.conv_in.weight, trained.unet.conv_in.weight)


@pytest.mark.parametrize("make", [tiny_autoencoder, tiny_vq_autoencoder], ids=["kl", "vq-snapshot"])
def test_preflight_latent_shape_is_the_autoencoders(tmp_path, make):
    vae = load_autoencoder(make(tmp_path / "vae"), "model.vae")
    root = tmp_path / "vae"
    file = root / "vqvae" / "config.json" if (root / "vqvae").is_dir() else root / "config.json"
    for shape in [(3, 8, 8), (3, 12, 12), (3, 16, 16)]:
        assert latent_shape(json.loads(file.read_text()), shape) == latent_shape_of(vae, shape, "model.vae")


def test_a_missing_folder_stops_before_any_job(tmp_path):
    config = own_config(tmp_path / "nowhere")
    with pytest.raises(InputError) as err:
        check_machine(config, {"pretrained_full"}, local=True, workdir=tmp_path)
    assert one_line(err) == f"config key 'model.pretrained': file not found: {tmp_path / 'nowhere'}"


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f: (f / "unet" / "config.json").unlink(), "{f} has no loadable UNet (no unet/config.json)"),
        (
            lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").rename(f / "unet" / "model.bin"),
            "{f}/unet has no safetensors weights (pickled weights are never loaded)",
        ),
        (
            lambda f: (f / "family.json").write_text('{"family": "latent"}'),
            "{f} holds a 'latent' model (family.json), model.family is 'pixel'",
        ),
        (
            lambda f: (f / "scheduler" / "scheduler_config.json").unlink(),
            "{f} has no scheduler/scheduler_config.json",
        ),
    ],
    ids=["no-unet-config", "pickled-weights", "other-family", "no-scheduler"],
)
def test_a_folder_without_a_loadable_unet_stops_before_any_job(tmp_path, damage, expected):
    folder = ddpm_folder(tmp_path / "ddpm")
    config = own_config(folder)
    check_machine(config, {"pretrained_full"}, local=True, workdir=tmp_path)
    damage(folder)
    with pytest.raises(InputError) as err:
        check_machine(config, {"pretrained_full"}, local=True, workdir=tmp_path)
    assert one_line(err) == "config key 'model.pretrained': " + expected.format(f=folder)


def test_a_unet_of_other_images_stops_before_any_job(tmp_path):
    folder = ddpm_folder(tmp_path / "ddpm", channels=3, size=32)
    config = own_config(folder)  # digits: 1-channel 8x8
    with pytest.raises(InputError) as err:
        check_machine(config, {"pretrained_full"}, local=True, workdir=tmp_path)
    assert one_line(err) == (
        "config key 'model.pretrained': its UNet takes 3-channel inputs of sample_size 32 (out_channels 3), "
        "the data's images are 1-channel 8x8"
    )
    with pytest.raises(InputError) as err:  # and again in the job, from the loaded model
        load_own_model(config["model"], (1, 8, 8))
    assert "3-channel inputs of sample_size 32" in one_line(err)


def test_a_latent_unet_of_other_latents_stops_before_any_job(tmp_path):
    vae = tiny_autoencoder(tmp_path / "vae", channels=1)  # 1x8x8 images -> 4x4x4 latents
    folder = ddpm_folder(tmp_path / "ldm", channels=4, size=8)
    config = own_config(folder, family="latent", vae=str(vae))
    with pytest.raises(InputError) as err:
        check_machine(config, {"pretrained_full"}, local=True, workdir=tmp_path)
    assert one_line(err) == (
        "config key 'model.pretrained': its UNet takes 4-channel inputs of sample_size 8 (out_channels 4), "
        f"the latents of model.vae ({vae}) are 4-channel 4x4"
    )


def test_methods_that_read_training_checkpoints_are_refused(tmp_path):
    config = default_config()
    config["model"]["pretrained"] = str(tmp_path / "ddpm")
    with pytest.raises(InputError) as err:
        validate(config)
    assert one_line(err) == (
        "config key 'methods.TracIn': kind tracin reads the full model's training checkpoints, which a "
        f"trained model of model.pretrained ({tmp_path / 'ddpm'}) does not have"
    )


@pytest.mark.slow
def test_a_finished_runs_full_model_attributed_as_ones_own_gives_the_same_trak_scores(tiny_run, tmp_path):
    """The round trip: tiny_run's full model as model.pretrained of a workspace with the same data, LDS
    retrains and featurizer; pretrained_full makes the full model (no train_full), TRAK scores match."""
    full = tiny_run / "results" / "tiny" / "models" / "full" / "seed0"
    config = deep_update(copy.deepcopy(TINY), {"model": {"pretrained": str(full)}})
    config["counterfactual"] = {"enabled": False}
    workdir = make_workspace(tmp_path / "own", config)
    written = yaml.safe_load((workdir / "config.yaml").read_text())
    written["methods"] = {"TRAK": {"kind": "trak", "featurizer": "trak"}}
    written["featurizers"] = {"trak": written["featurizers"]["trak"]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(written))
    targets = [f"results/tiny/scores/TRAK/{split}.zarr" for split in ("val", "gen")]
    jobs = planned_jobs(workdir, *targets)
    assert jobs["pretrained_full"] == 1 and "train_full" not in jobs, jobs
    snakemake(workdir, *targets, "--cores", "2")
    for target in targets:
        mine, theirs = (read_arrays(run / target)["scores"] for run in (workdir, tiny_run))
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-7)
