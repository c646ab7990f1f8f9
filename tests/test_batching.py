"""Several tiny models per job: each model is bitwise the one made alone, and batches cover every model."""

import copy
import random
import re
import shutil

import numpy as np
import pytest
import torch

from diffattr.batching import each_model
from diffattr.models import PixelDiffusion, build_scheduler, build_unet
from diffattr.store import read_arrays
from diffattr.training import train
from tests.conftest import TINY_MODEL
from tests.workflow_helpers import (
    TINY,
    TINY_SHAPLEY,
    copy_workspace,
    deep_update,
    make_workspace,
    planned_jobs,
    snakemake,
    stage_jobs,
    stage_outputs,
)
from tests.workflow_helpers import planned_outputs as workflow_planned_outputs

TRAIN = {
    "steps": 3,
    "batch_size": 4,
    "lr": 1e-3,
    "betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "warmup_fraction": 0.0,
    "lr_schedule": "constant",
    "ema": True,
    "ema_max_decay": 0.99,
    "grad_clip": 1.0,
    "checkpoints": 0,
}


def train_batch(specs, images):
    """What scripts/train.py does for a batch: each model built and trained from its own seed."""
    weights = []
    for spec, _ in each_model(specs, [f"model{i}" for i in range(len(specs))], threads=1):
        # a previous model leaving the global generators somewhere else must not matter
        random.random(), np.random.rand(), torch.rand(3)
        model = PixelDiffusion(
            build_unet({**TINY_MODEL, "dropout": 0.1}, 8, 1, seed=spec["seed"]),
            build_scheduler({"num_train_timesteps": 1000, "beta_schedule": "linear"}),
        )
        train(model, images[spec["subset"]], TRAIN, seed=spec["seed"], device=torch.device("cpu"))
        weights.append({k: v.clone() for k, v in model.unet.state_dict().items()})
    return weights


def test_a_model_trained_in_a_batch_is_bitwise_the_model_trained_alone(tiny_images):
    first, second = {"subset": slice(0, 4), "seed": 3}, {"subset": slice(2, 6), "seed": 7}
    (alone,) = train_batch([second], tiny_images)
    in_batch = train_batch([first, second], tiny_images)
    assert alone.keys() == in_batch[1].keys()
    for name, value in alone.items():
        assert torch.equal(value, in_batch[1][name]), name
    assert not torch.equal(in_batch[0]["conv_in.weight"], in_batch[1]["conv_in.weight"])


def test_a_batch_needs_one_output_per_model():
    with pytest.raises(ValueError, match="2 models has 1 outputs"):
        list(each_model([{}, {}], ["one"]))


def planned_outputs(workdir, models_per_job):
    """Rule -> [outputs of each planned job] of a dry run of the tiny contributor branch."""
    config = deep_update(copy.deepcopy(TINY_SHAPLEY), {"shapley": {"models_per_job": models_per_job}})
    return workflow_planned_outputs(make_workspace(workdir, config))


def test_coalition_batches_make_every_model_once_in_fewer_jobs(tmp_path):
    alone, batched = planned_outputs(tmp_path, 1), planned_outputs(tmp_path, 4)
    for stage in ("coalition_model", "coalition_property"):
        assert stage_outputs(batched, stage) == stage_outputs(alone, stage)
        assert len(set(stage_outputs(batched, stage))) == len(alone[stage])
        batches = [job for rule, jobs in batched.items() if rule.startswith(f"{stage}_batch") for job in jobs]
        assert len(batches) < len(alone[stage]) and all(len(job) <= 4 for job in batches)
        for job in batches:  # one way per batch; counterfactual retrains (they need values) by themselves
            ways = {re.search(r"/(sparse_ft|retrain)/([\w-]+)/seed", path).groups() for path in job}
            assert len({how for how, _ in ways}) == 1
            assert len({c.startswith(("top-", "bottom-")) for _, c in ways}) == 1
    # the full model, which pruning starts from, keeps a job of its own
    assert batched["coalition_model"] == [
        ["results/tiny-shapley/shapley/models/coalition/retrain/full/seed0"]
    ]
    others = {rule for rule in batched if not rule.startswith("coalition_")}
    assert {rule: len(batched[rule]) for rule in others} == {rule: len(alone[rule]) for rule in others}


def test_datamodel_retrains_are_batched_as_the_lds_retrains(tmp_path):
    """lds.models_per_job packs the datamodel section's retrains (training and measuring) as it packs the
    LDS ones: every model once, at most models_per_job to a job, the LDS retrains apart."""
    config = {
        **TINY,
        "methods": {"TRAK": {"kind": "trak", "featurizer": "trak"}, "datamodel": {"kind": "datamodel"}},
        "featurizers": {"trak": TINY["featurizers"]["trak"]},
        "counterfactual": {"enabled": False},
        "replace_sections": ["featurizers", "methods"],
        "datamodel": {"num_subsets": 5},
    }
    plan = workflow_planned_outputs(
        make_workspace(tmp_path, deep_update(copy.deepcopy(config), {"lds": {"models_per_job": 2}}))
    )
    for stage, path in (
        ("train_datamodel", "models/datamodel/{}/seed0"),
        ("datamodel_outputs", "outputs/datamodel/{}/seed0.npz"),
    ):
        expected = sorted(f"results/tiny/{path.format(m)}" for m in range(5))
        assert stage_outputs(plan, stage) == expected and stage not in plan
        batched = [job for rule, jobs in plan.items() if rule.startswith(f"{stage}_batch") for job in jobs]
        assert sorted(len(job) for job in batched) == [1, 2, 2]
    assert "train_lds" not in plan and all(
        len(job) == 2 for job in plan["train_lds_batch0"] + plan["train_lds_batch1"]
    )


def model_bytes(model_dir):
    """Every file of a saved model but the ones recording wall-clock seconds."""
    return {
        str(p.relative_to(model_dir)): p.read_bytes()
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and p.name != "training.json"
    }


@pytest.mark.slow
def test_lds_batch_reruns_exactly_and_equals_models_trained_alone(tiny_run, tmp_path):
    workdir = copy_workspace(tiny_run, tmp_path / "copy")
    # the tiny run's 4 LDS models, made in one batch job (lds.models_per_job 8)
    models = [f"results/tiny/models/lds/{m}/seed0" for m in range(TINY["lds"]["num_subsets"])]
    batched = {m: model_bytes(workdir / m) for m in models}
    # a model lost from a batch: its batch job remakes the batch, bit for bit
    shutil.rmtree(workdir / models[1])
    assert planned_jobs(workdir, *models) == {"train_lds_batch0": 1}
    snakemake(workdir, "--cores", "2", *models)
    assert {m: model_bytes(workdir / m) for m in models} == batched
    # one job per model, for the first and the last of the batch: the same bits
    alone = [models[0], models[-1]]
    make_workspace(workdir, deep_update(copy.deepcopy(TINY), {"lds": {"models_per_job": 1}}))
    assert planned_jobs(workdir, *alone, "--forcerun", "train_lds") == {"train_lds": 2}
    snakemake(workdir, "--cores", "2", *alone, "--forcerun", "train_lds")
    assert {m: model_bytes(workdir / m) for m in alone} == {m: batched[m] for m in alone}


def test_featurize_batches_plan_every_shard_once_and_never_mix_featurizers(tmp_path):
    tiny = deep_update(copy.deepcopy(TINY), {"counterfactual": {"enabled": False}})
    alone = workflow_planned_outputs(
        make_workspace(tmp_path, deep_update(tiny, {"featurize": {"shards_per_job": 1}}))
    )
    batched = workflow_planned_outputs(
        make_workspace(tmp_path, deep_update(tiny, {"featurize": {"shards_per_job": 3}}))
    )
    for stage in ("featurize", "featurize_checkpoint"):
        assert stage_outputs(batched, stage) == stage_outputs(alone, stage)
        jobs = [
            job for rule, outputs in batched.items() if rule.startswith(f"{stage}_batch") for job in outputs
        ]
        assert len(jobs) < len(alone[stage]) and all(len(job) <= 3 for job in jobs)
        for job in jobs:  # one featurizer per batch: changing one featurizer reruns no other's shards
            assert len({re.search(r"/grads/([\w-]+)/", path).group(1) for path in job}) == 1


def assert_same_features(workdir, expected):
    """Every shard of `expected` holds the same features and positions in `workdir` now."""
    for path, arrays in expected.items():
        again = read_arrays(workdir / path, ["features", "position"])
        for name, value in arrays.items():
            assert np.array_equal(again[name], value), (path, name)


@pytest.mark.slow
def test_featurize_batch_reruns_exactly_and_equals_shards_computed_alone(tiny_run, tmp_path):
    workdir = copy_workspace(tiny_run, tmp_path / "copy")
    # 3 of the tiny run's 6 tracin shards at its checkpoint, made in one batch job (shards_per_job 8)
    shards = [f"results/tiny/grads/tracin/ckpt0/{split}/0.zarr" for split in ("train", "val", "gen")]
    batched = {p: read_arrays(workdir / p, ["features", "position"]) for p in shards}
    # a shard lost from a batch: its batch job remakes the batch, with the same features
    shutil.rmtree(workdir / shards[1])
    assert stage_jobs(planned_jobs(workdir, *shards)) == {"featurize_checkpoint": 1}
    snakemake(workdir, "--cores", "2", *shards)
    assert_same_features(workdir, batched)
    # one job per shard: the same features
    make_workspace(workdir, deep_update(copy.deepcopy(TINY), {"featurize": {"shards_per_job": 1}}))
    assert planned_jobs(workdir, *shards, "--forcerun", "featurize_checkpoint") == {"featurize_checkpoint": 3}
    snakemake(workdir, "--cores", "2", *shards, "--forcerun", "featurize_checkpoint")
    assert_same_features(workdir, batched)
