"""Each model family through the whole workflow on toy data: the LDS branch and the contributor branch."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from diffattr.config import validate
from diffattr.data import read_imageset
from tests.tiny_sd import LORA, tiny_autoencoder, tiny_stable_diffusion
from tests.workflow_helpers import (
    ROOT,
    TINY,
    TINY_SHAPLEY,
    deep_update,
    layered_config,
    make_workspace,
    planned_jobs,
    snakemake,
)

pytestmark = pytest.mark.slow

ARTISTS = {"ana": "cubism", "bo": "baroque", "cy": "cubism"}


def both_branches(model: dict, data: dict | None = None, shapley_data: dict | None = None) -> dict:
    """The tiny LDS run and the tiny contributor run in one config, with `model` in both branches."""
    config = deep_update(json.loads(json.dumps(TINY)), {"experiment": "family", "model": model})
    config["shapley"] = deep_update(json.loads(json.dumps(TINY_SHAPLEY["shapley"])), {"model": model})
    config["lds"]["num_subsets"] = 3
    config["train"]["checkpoints"] = 0
    config["counterfactual"] = {"enabled": False}
    config["shapley"].update(num_coalitions=3, heldout={"num_coalitions": 2, "seeds": [0]})
    config["shapley"]["contributors"] = {"by": "class", "planted": {"ids": []}}
    if data:
        config["data"] = data
    if shapley_data:
        config["shapley"]["data"] = shapley_data
    return config


def painting_folder(path, n: int = 36) -> dict:
    """RGB 8x8 'paintings' (tinted digits) by three artists, listed in a CSV with artist and style."""
    digits = load_digits()
    path.mkdir(parents=True)
    rows = []
    for i in range(n):
        artist = list(ARTISTS)[i % 3]
        tint = np.array([[1.0, 0.4, 0.2], [0.2, 1.0, 0.4], [0.4, 0.2, 1.0]])[i % 3]
        gray = digits.images[i] / 16.0
        Image.fromarray((gray[..., None] * tint * 255).astype(np.uint8)).save(path / f"{i}.png")
        rows.append({"file": f"{i}.png", "artist": artist, "style": ARTISTS[artist]})
    pd.DataFrame(rows).to_csv(path / "meta.csv", index=False)
    return {
        "path": str(path),
        "metadata": str(path / "meta.csv"),
        "label_column": "artist",
        "image_size": 8,
        "caption": "a {style} painting by {artist}",
    }


def family_workspace(path, config: dict):
    """A workspace running only TRAK, D-TRAK and pixel similarity (the methods every family shares)."""
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


def check_both_branches(workdir) -> None:
    out = workdir / "results" / "family"
    lds = pd.read_csv(out / "metrics" / "lds.csv")
    assert len(lds) and np.isfinite(lds["lds"]).all()  # (lambda is NaN for pixel similarity)
    shapley = pd.read_csv(out / "shapley" / "metrics" / "shapley_lds.csv")
    assert len(shapley)
    assert (out / "report" / "index.html").is_file()  # one report for both branches


def test_latent_family_runs_both_branches(tmp_path):
    vae = tiny_autoencoder(tmp_path / "vae", channels=1)
    workdir = family_workspace(tmp_path / "w", both_branches({"family": "latent", "vae": str(vae)}))
    snakemake(workdir, "--cores", "2")
    check_both_branches(workdir)
    model = json.loads((workdir / "results/family/models/full/seed0/family.json").read_text())
    assert model == {"family": "latent", "vae": str(vae.resolve())}
    pruning = json.loads((workdir / "results/family/shapley/models/pruned/pruning.json").read_text())
    assert pruning["pruning"]["channels_after"] < pruning["pruning"]["channels_before"]


def test_lora_family_runs_both_branches_with_captions(tmp_path):
    sd = tiny_stable_diffusion(tmp_path / "sd")
    folder = painting_folder(tmp_path / "paintings")
    data = {"source": "image_folder", "n_train": 24, "n_val": 6, "image_folder": folder}
    model = {"family": "lora", "pretrained": str(sd), "lora": LORA}
    config = both_branches(model, data, {**data, "n_val": 3})
    config["shapley"]["contributors"] = {"by": "column", "column": "artist", "planted": {"ids": []}}
    config["shapley"]["pruning"]["ratio"] = 0.5
    workdir = family_workspace(tmp_path / "w", config)
    snakemake(workdir, "--cores", "2")
    check_both_branches(workdir)
    out = workdir / "results" / "family"
    generated = read_imageset(out / "samples" / "full.zarr")
    assert set(generated.captions) == {f"a {s} painting by {a}" for a, s in ARTISTS.items()}
    assert (out / "models/full/seed0/pytorch_lora_weights.safetensors").is_file()
    assert not (out / "models/full/seed0/unet").exists()  # only the adapters are saved
    pruning = json.loads((out / "shapley/models/pruned/pruning.json").read_text())["pruning"]
    assert pruning["kind"] == "lora_rank" and (pruning["rank_before"], pruning["rank_after"]) == (4, 2)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("artbench2-lora-lds", {"train_lds": 192, "lds_outputs": 192, "featurize": 2 * 14, "train_full": 1}),
        ("celeba-lds", {"train_lds": 192, "lds_outputs": 192, "featurize": 2 * 14, "train_full": 1}),
        ("celebahq-ldm-shapley", {"coalition_model": 2 * 302 + 100 * 3 + 2 * 2 * 3 + 2, "prune": 1}),
        ("artbench-lora-shapley", {"coalition_model": 2 * 302 + 100 * 3 + 2 * 2 * 3 + 2, "prune": 1}),
    ],
)
def test_family_presets_dry_run_with_the_paper_job_counts(tmp_path, preset, expected):
    workdir = make_workspace(tmp_path)
    path = ROOT / "experiments" / f"{preset}.yaml"
    jobs = planned_jobs(workdir, "--configfile", str(path))
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
