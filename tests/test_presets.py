"""Presets in experiments/: every one is found and plans its jobs; the sparsified-unlearning preset's
logic (single images or small random groups valued by datamodels fitted on sparse-FT vs retrained
models, evaluated by the LDS over held-out subsets) runs end to end at toy scale."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import yaml

from diffattr.config import validate
from tests.test_data import fake_cifar10
from tests.workflow_helpers import ROOT, deep_update, layered_config, make_workspace, planned_jobs, snakemake

PRESETS = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_plans_its_jobs_and_plants_nothing_unasked(preset, tmp_path):
    config = yaml.safe_load(preset.read_text())
    jobs = planned_jobs(make_workspace(tmp_path), "--configfile", str(preset))
    assert jobs.get("all") == 1, jobs
    shapley = config.get("shapley") or {}
    if shapley.get("enabled"):
        # config.yaml's demo plants two corrupted contributors; a preset must not inherit them
        assert shapley["contributors"]["planted"]["ids"] == [], preset.name


# The sparsified-unlearning preset shrunk: a fake CIFAR-10 tarball of random 32x32 images, 200 of them
# in 20 random groups of 10, the preset's UNet kinds (four levels, attention at the second, 32
# GroupNorm groups) at 32-64 channels, 2 training steps, a few subsets; the classifier replaces the
# Inception file.
UNLEARNING_TOY = {
    "experiment": "unlearning-toy",
    "shapley": {
        "data": {"n_train": 200, "n_val": 10},
        "model": {"block_out_channels": [32, 64, 64, 64]},
        "train": {"steps": 2, "batch_size": 16},
        "contributors": {"group_size": 10},
        "num_coalitions": 8,
        "heldout": {"num_coalitions": 3, "seeds": [0]},
        "pruning": {"steps": 1},
        "finetune": {"steps": 1},
        "property": {"num_images": 12, "num_inference_steps": 2, "features": "classifier"},
        "classifier": {"steps": 5},
        "bootstrap": 10,
        "models_per_job": 8,
    },
    "resources": {"gpu_mem_mb": 1000, "cpu_mem_mb": 1000},
}


@pytest.mark.slow
def test_unlearning_preset_values_images_by_datamodels_on_sparse_ft_and_retrained_models(tmp_path):
    preset = yaml.safe_load((ROOT / "experiments" / "cifar10-unlearning.yaml").read_text())
    config = deep_update(copy.deepcopy(preset), UNLEARNING_TOY)
    config["device"] = "cpu"
    config["shapley"]["data"]["cifar10_path"] = str(tmp_path / "cifar-10-python.tar.gz")
    fake_cifar10(tmp_path / "cifar-10-python.tar.gz")  # 40 images a batch: 200 train, 20 of each class
    workdir = make_workspace(tmp_path, config)
    snakemake(workdir, "--cores", "2")
    out = workdir / "results" / "unlearning-toy" / "shapley"
    contributors = pd.read_csv(out / "data" / "contributors.csv")
    assert len(contributors) == 20 and (contributors["images"] == 10).all()
    for how in ("sparse_ft", "retrain"):
        values = pd.read_csv(out / "values" / f"datamodel-{how}.csv")
        assert len(values) == 20 and values["value"].notna().all()
        assert (values["property"] == "fid").all()
    lds = pd.read_csv(out / "metrics" / "shapley_lds.csv").set_index(["estimator", "how"])
    assert set(lds.index) == {("datamodel", "sparse_ft"), ("datamodel", "retrain")}
    assert (lds["coalitions"] == 3).all()
    agreement = pd.read_csv(out / "metrics" / "agreement.csv")
    assert set(agreement["how"]) == {"sparse_ft"}
    assert (workdir / "results" / "unlearning-toy" / "report" / "index.html").is_file()


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_paper_presets_run_one_gpu_job_per_model(preset):
    """config.yaml's demo packs 8 tiny models into a job; a paper preset must not inherit that."""
    config = validate(layered_config(preset))
    if preset.stem.startswith("demo-"):  # variants of the embedded default, on its tiny models
        return
    for branch in ("lds", "shapley"):
        if config[branch]["enabled"]:
            assert config[branch]["models_per_job"] == 1, f"{preset.name}: {branch}.models_per_job"
