"""Model families through the whole workflow on toy data, where no preset's toy run covers them; the
family presets' paper job counts."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from diffattr.config import validate
from tests.tiny_sd import tiny_autoencoder
from tests.workflow_helpers import (
    PRESET_PLANS,
    ROOT,
    TINY,
    deep_update,
    layered_config,
    make_workspace,
    preset_jobs,
    snakemake,
)

pytestmark = pytest.mark.slow


def family_workspace(path, model: dict):
    """The tiny LDS run with `model`, running only TRAK, D-TRAK and pixel similarity (the methods every
    family shares)."""
    config = deep_update(json.loads(json.dumps(TINY)), {"experiment": "family", "model": model})
    config["lds"]["num_subsets"] = 3
    config["train"]["checkpoints"] = 0
    config["counterfactual"] = {"enabled": False}
    workdir = make_workspace(path, config)
    full = yaml.safe_load((workdir / "config.yaml").read_text())
    full["methods"] = {
        "TRAK": {"kind": "trak", "featurizer": "trak"},
        "D-TRAK": {"kind": "trak", "featurizer": "dtrak"},
        "pixel": {"kind": "pixel"},
    }
    full["featurizers"] = {name: full["featurizers"][name] for name in ("trak", "dtrak")}
    (workdir / "config.yaml").write_text(yaml.safe_dump(full))
    return workdir


def test_latent_family_runs_the_lds_branch(tmp_path):
    """The one family x branch no preset's toy run covers (tests/test_presets.py runs the latent family's
    contributor branch in celebahq-ldm-shapley, and the LoRA family's both branches with captions)."""
    vae = tiny_autoencoder(tmp_path / "vae", channels=1)
    workdir = family_workspace(tmp_path / "w", {"family": "latent", "vae": str(vae)})
    snakemake(workdir, "--cores", "2")
    out = workdir / "results" / "family"
    lds = pd.read_csv(out / "metrics" / "lds.csv")
    assert len(lds) and np.isfinite(lds["lds"]).all()  # (lambda is NaN for pixel similarity)
    assert (out / "report" / "index.html").is_file()
    model = json.loads((out / "models/full/seed0/family.json").read_text())
    # model.latent_scale unset: the autoencoder's own scaling factor, recorded beside its path
    scale = json.loads((vae / "config.json").read_text())["scaling_factor"]
    assert model == {"family": "latent", "vae": str(vae.resolve()), "latent_scale": scale}


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("artbench2-lora-lds", {"train_lds": 192, "lds_outputs": 192, "featurize": 2 * 14, "train_full": 1}),
        ("celeba-lds", {"train_lds": 192, "lds_outputs": 192, "featurize": 2 * 14, "train_full": 1}),
        ("celebahq-ldm-shapley", {"coalition_model": 2 * 302 + 100 * 3 + 2 * 2 * 3 + 2, "prune": 1}),
        ("artbench-lora-shapley", {"coalition_model": 2 * 302 + 100 * 3 + 2 * 2 * 3 + 2, "prune": 1}),
    ],
)
@pytest.mark.xdist_group(PRESET_PLANS)
def test_family_presets_dry_run_with_the_paper_job_counts(preset, expected):
    path = ROOT / "experiments" / f"{preset}.yaml"
    jobs = preset_jobs(preset)
    config = validate(layered_config(path))
    if "coalition_model" in expected:  # plus, per way, the datamodel baseline's own coalitions, if any
        expected["coalition_model"] += 2 * config["shapley"].get("datamodel", {}).get("num_coalitions", 0)
    assert {rule: jobs.get(rule) for rule in expected} == expected


def test_missing_model_weights_stop_the_run_with_one_line_naming_the_key(tmp_path):
    config = {**TINY, "model": {"family": "lora", "pretrained": str(tmp_path / "no-such-snapshot")}}
    workdir = make_workspace(tmp_path / "w", {**config, "counterfactual": {"enabled": False}})
    result = snakemake(workdir, "--cores", "1", check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("diffattr:")]
    assert result.returncode != 0
    assert lines == [
        f"diffattr: config key 'model.pretrained': file not found: {tmp_path / 'no-such-snapshot'}"
    ]
    assert not (workdir / "results").exists()
