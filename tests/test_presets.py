"""Presets in experiments/: every one plans its jobs, and every one runs end to end at toy scale on
stand-ins of its local inputs: in `make test` with its topology at the smallest valid widths, in
`make test-presets` with its real, full-size architecture (toy_scale shrinks counts either way)."""

from __future__ import annotations

import copy
import json
import math
import shutil
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from diffattr.config import validate
from diffattr.data import read_imageset
from tests.test_data import fake_cifar10, fake_cifar_tarball
from tests.test_properties import FakeInception
from tests.tiny_sd import tiny_stable_diffusion, tiny_vq_autoencoder
from tests.workflow_helpers import PRESET_PLANS, ROOT, layered_config, preset_jobs, snakemake

PRESETS = sorted((ROOT / "experiments").glob("*.yaml"))
# demo-* presets are variants of the embedded default, which other tests run
PAPER_PRESETS = [p for p in PRESETS if not p.stem.startswith("demo-")]


@pytest.mark.xdist_group(PRESET_PLANS)
@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_plans_its_jobs_and_plants_nothing_unasked(preset):
    config = yaml.safe_load(preset.read_text())
    jobs = preset_jobs(preset.stem)
    assert jobs.get("all") == 1, jobs
    # README's table of jobs per preset (benchmarks/results/presets.csv, python benchmarks/preset_plans.py)
    committed = pd.read_csv(ROOT / "benchmarks" / "results" / "presets.csv").set_index("preset")["jobs"]
    assert committed[preset.stem] == sum(jobs.values()), "rerun python benchmarks/preset_plans.py"
    shapley = config.get("shapley") or {}
    if shapley.get("enabled"):
        # config.yaml's demo plants two corrupted contributors; a preset must not inherit them
        assert shapley["contributors"]["planted"]["ids"] == [], preset.name


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_paper_presets_run_one_gpu_job_per_model(preset):
    """config.yaml's demo packs 8 tiny models into a job; a paper preset must not inherit that."""
    config = validate(layered_config(preset))
    if preset.stem.startswith("demo-"):  # variants of the embedded default, on its tiny models
        return
    for branch in ("lds", "shapley"):
        if config[branch]["enabled"]:
            assert config[branch]["models_per_job"] == 1, f"{preset.name}: {branch}.models_per_job"


# Toy scale: 2 optimizer steps at batch 2 (a cluster job that fails at step 2 fails here first), a
# handful of images, the fewest subsets / coalitions / seeds / timesteps the estimators accept, and
# everything batched into as few jobs as the rules allow (each job start costs ~5-10 s of imports).
TOY_STEPS = 2
TOY_IMAGE_SIZE = 32  # image folders are read at most at CIFAR's size; CIFAR itself is 32x32
TOY_PER_JOB = 1000
TOY_LORA_RANK = 2  # the fewest rank pairs that a pruning ratio below 1 still prunes


def toy_scale(config: dict, full_size: bool = False) -> dict:
    """A validated config with every count shrunk to toy size: data, steps, subsets, seeds, coalitions,
    timesteps, EK-FAC's draws, projection dims, ensemble members, generated images, bootstrap, targets;
    one featurizer per distinct toy spec and one method per (kind, options). Unless `full_size`, the models
    keep their topology (block types, attention positions, GroupNorm groups, head dims, dropout, LoRA
    targets, the autoencoder) at the smallest widths that keep it valid (toy_widths). Pruning ratio,
    estimator, property and the featurizers' outputs stay the preset's."""
    config = copy.deepcopy(config)
    config["device"] = "cpu"
    if config["lds"]["enabled"]:
        _toy_data(config["data"], n_train=8, n_val=4)
        _toy_train(config["train"])
        lds = config["lds"]
        lds.update(num_subsets=3, timesteps=1, models_per_job=TOY_PER_JOB)
        lds.update(train_seeds=lds["train_seeds"][:1], noise_seeds=lds["noise_seeds"][:1])
        config["generate"].update(num_images=4, num_inference_steps=2)
        for featurizer in config["featurizers"].values():
            featurizer.update(timesteps=1, dim=8)
        for method in config["methods"].values():
            if method.get("steps"):  # Journey-TRAK's DDIM steps: at most the toy generation's
                method["steps"] = min(method["steps"], 2)
            if method["kind"] == "trak" and method["ensemble"]["members"] > 1:  # the fewest that average
                method["ensemble"]["members"] = 2
            if method["kind"] == "ekfac":  # EK-FAC's random (t, noise) draws per image: 2 still average
                method["draws"] = {k: v if v == "fixed" else min(v, 2) for k, v in method["draws"].items()}
        _distinct_methods(config)
        config["featurize"].update(shard_size=16, batch_size=4, shards_per_job=TOY_PER_JOB)
        datamodel = config["datamodel"]
        # 2 folds of 2 retrains: the fewest whose cross-validated R^2 is defined
        datamodel.update(num_subsets=4, cv_folds=2, train_seeds=datamodel["train_seeds"][:1])
        config["counterfactual"].update(num_targets=1, remove=2)
        # top_k: the dominating-norm check's top-scored training images, fewer than the 8 there are
        config["evaluate"].update(bootstrap=10, top_k=4)
        if not full_size:
            config["model"] = toy_widths(config["model"])
    shapley = config["shapley"]
    if shapley["enabled"]:
        data = shapley.get("data") or config["data"]
        prop = shapley["property"]
        classes = len(data["classes"]) if data["source"] in ("cifar10", "cifar100") else 0
        clusters = prop["clusters"] if prop["name"] == "diversity" else 0  # Ward needs as many images
        _toy_data(data, n_train=max(12, 2 * classes, clusters), n_val=4)
        _toy_train(shapley.get("train") or config["train"])
        shapley.update(num_coalitions=3, bootstrap=10, models_per_job=TOY_PER_JOB)
        shapley["heldout"].update(num_coalitions=2, seeds=shapley["heldout"]["seeds"][:1])
        if shapley["datamodel"]["num_coalitions"]:
            # 3, not 2: one fine-tuning step draws the same first batch from two equal-sized coalitions
            # that share those images, so 2 coalitions can tie, the ridge fit is all 0 and the Shapley
            # LDS is NaN (Spearman of tied predictions)
            shapley["datamodel"]["num_coalitions"] = 3
        shapley["pruning"]["steps"] = min(shapley["pruning"]["steps"], 1)
        for section in ("finetune", "gradient_ascent", "classifier"):
            shapley[section]["steps"] = 1
        prop.update(num_images=4, num_inference_steps=2)
        if not full_size and shapley.get("model"):
            shapley["model"] = toy_widths(shapley["model"])
        elif not full_size and not config["lds"]["enabled"]:
            config["model"] = toy_widths(config["model"])
    return config


def toy_widths(model: dict) -> dict:
    """The model at the smallest widths that keep its topology valid: UNet channels divided by the
    largest factor that leaves every level a multiple of its GroupNorm groups and attention head dim
    (so the levels keep their ratios, e.g. 128-256-256-256 -> 32-64-64-64), LoRA at rank 2 with the
    same alpha / rank scale."""
    model = copy.deepcopy(model)
    if model.get("family") == "lora":
        lora = model["lora"]
        lora.update(alpha=lora["alpha"] * TOY_LORA_RANK / lora["rank"], rank=TOY_LORA_RANK)
        return model
    unit = math.lcm(model["norm_num_groups"], model["attention_head_dim"] or 1)
    channels = model["block_out_channels"]
    factor = math.gcd(*(c // unit for c in channels)) if all(c % unit == 0 for c in channels) else 1
    model["block_out_channels"] = [c // factor for c in channels]
    return model


def _distinct_methods(config: dict) -> None:
    """One featurizer per distinct spec (the first name of each) and one method per (kind, options)
    once its featurizer is renamed so: at toy size the K- and k-variants of a featurizer coincide."""
    first: dict[str, str] = {}
    rename = {
        name: first.setdefault(json.dumps(spec, sort_keys=True), name)
        for name, spec in config["featurizers"].items()
    }
    config["featurizers"] = {
        name: spec for name, spec in config["featurizers"].items() if rename[name] == name
    }
    seen: set[str] = set()
    methods = {}
    for name, method in config["methods"].items():
        if "featurizer" in method:
            method["featurizer"] = rename[method["featurizer"]]
        key = json.dumps(method, sort_keys=True)
        if key not in seen or name in (config["counterfactual"]["methods"] or []):
            seen.add(key)
            methods[name] = method
    config["methods"] = methods


def _toy_data(data: dict, n_train: int, n_val: int) -> None:
    data.update(n_train=n_train, n_val=n_val)
    if data.get("image_folder"):
        data["image_folder"]["image_size"] = min(data["image_folder"]["image_size"], TOY_IMAGE_SIZE)


def _toy_train(train: dict) -> None:
    train.update(steps=TOY_STEPS, epochs=None, batch_size=2, seeds=train["seeds"][:1])
    train["checkpoints"] = min(train["checkpoints"], 2)


def fake_inputs(config: dict, root: Path) -> dict:
    """The config with every local input it names (data sets, autoencoder or Stable Diffusion snapshot,
    CLIP for the aesthetic head or as features, Inception) replaced by a small stand-in written under
    `root`, read by the same loading code."""
    config = copy.deepcopy(config)
    root.mkdir(parents=True)
    shapley = config["shapley"]
    sections = [config] if config["lds"]["enabled"] else []
    if shapley["enabled"]:
        sections.append(shapley if shapley.get("data") else config)
    column = shapley["contributors"]["column"] if shapley["contributors"]["by"] == "column" else None
    for section in sections:
        _fake_data(section["data"], root, column)
        _fake_model(section.get("model") or config["model"], root)
    if config["lds"]["enabled"] and config["clip"]["weights"]:
        config["clip"].update(zip(("model", "weights"), tiny_clip_folder(root / "clip"), strict=True))
    prop = shapley["property"]
    if shapley["enabled"] and prop["name"] == "aesthetic":
        name, weights = tiny_clip_folder(root / "clip")
        torch.save({"weight": torch.randn(1, 16), "bias": torch.zeros(1)}, root / "head.pt")
        prop["clip"].update(model=name, weights=weights, head=str(root / "head.pt"))
    elif shapley["enabled"] and prop["features"] == "clip":
        prop["clip"].update(zip(("model", "weights"), tiny_clip_folder(root / "clip"), strict=True))
    elif shapley["enabled"] and prop["features"] == "inception":
        # clean-fid's torchscript call signature on a tiny random net, loaded by torch.jit.load
        (root / "inception").mkdir()
        torch.jit.script(FakeInception(features=64)).save(str(root / "inception" / "inception-2015-12-05.pt"))
        prop["inception_path"] = str(root / "inception")
    return config


def _fake_data(data: dict, root: Path, contributor_column: str | None) -> None:
    if data["source"] == "cifar10":
        data["cifar10_path"] = str(root / "cifar-10-python.tar.gz")
        if not Path(data["cifar10_path"]).exists():
            fake_cifar10(data["cifar10_path"])  # 200 train and 40 test images, every class
    elif data["source"] == "cifar100":
        data["cifar100_path"] = str(root / "cifar-100-python.tar.gz")
        splits = ["train", "test"]
        fake_cifar_tarball(
            data["cifar100_path"], "cifar-100-python", splits, b"fine_labels", np.arange(300) % 100
        )
    elif data["source"] == "image_folder":
        folder = data["image_folder"]
        fields = [f for _, f, _, _ in string.Formatter().parse(folder.get("caption") or "") if f]
        columns = {folder["label_column"], contributor_column, *fields} - {None}
        path = root / "images"
        if not path.exists():
            fake_image_folder(path, data["n_train"] + data["n_val"], folder["image_size"], sorted(columns))
        folder.update(path=str(path), metadata=str(path / "metadata.csv"), file_column="file")


def _fake_model(model: dict, root: Path) -> None:
    """A local snapshot for the families that load one: the preset's LoRA on a tiny Stable Diffusion
    (the snapshot is the user's; the LoRA config is the preset's architecture), and a tiny VQ-f4
    autoencoder (3 latent channels at a quarter of the size, as an LDM's) under the preset's UNet."""
    if model.get("family") == "lora":
        model["pretrained"] = str(tiny_stable_diffusion(root / "stable-diffusion"))
    elif model.get("family") == "latent":
        model["vae"] = str(tiny_vq_autoencoder(root / "ldm"))


def fake_image_folder(path: Path, n: int, size: int, columns: list[str]) -> None:
    """n random RGB images with a metadata CSV: a file column and each of `columns` cycling over 5 values
    (5 contributors: 30 coalitions, so that the few held-out ones drawn are distinct)."""
    rng = np.random.default_rng(0)
    path.mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path / f"{i}.png")
        rows.append({"file": f"{i}.png", **{c: f"{c}{i % 5}" for c in columns}})
    pd.DataFrame(rows).to_csv(path / "metadata.csv", index=False)


def tiny_clip_folder(path: Path) -> tuple[str, str]:
    """A random 1-layer open_clip model in a folder open_clip loads as 'local-dir:<folder>' in any process
    (conftest.tiny_clip registers its name in the test's process only): (model name, weights file)."""
    import open_clip

    tiny = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
    }
    name, weights = f"local-dir:{path}", path / "open_clip_pytorch_model.bin"
    if not weights.exists():
        path.mkdir(parents=True)
        (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny}))
        torch.manual_seed(0)
        torch.save(open_clip.create_model(name).state_dict(), weights)
    return name, str(weights)


# Presets whose full-size toy jobs run one at a time (Snakemake --cores 1), and in one pytest-xdist group
# so that they never run together: two of their jobs at once could exhaust a 24 GB machine.
ONE_JOB_AT_A_TIME = {
    # a coalition-model job of its 274M-parameter latent UNet peaks at 9.6 GB
    "celebahq-ldm-shapley",
    # EK-FAC on the 35.7M UNet: factors of 113 layers of up to 4,609 inputs (9.1 GB, mostly their float64
    # eigendecompositions), scores once per split (9.5 GB)
    "cifar2-lds",
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", PAPER_PRESETS, ids=[p.stem for p in PAPER_PRESETS])
def test_preset_runs_end_to_end_at_toy_scale_with_its_topology(preset, tmp_path):
    try:
        run_toy_preset(preset, tmp_path, full_size=False)
    finally:  # toy runs write models of every coalition: free the disk for the tests that follow
        shutil.rmtree(tmp_path, ignore_errors=True)


def full_size_param(preset: Path):
    marks = [pytest.mark.xdist_group("one-job-at-a-time")] if preset.stem in ONE_JOB_AT_A_TIME else []
    return pytest.param(preset, id=preset.stem, marks=marks)


@pytest.mark.presets
@pytest.mark.parametrize("preset", [full_size_param(p) for p in PAPER_PRESETS])
def test_preset_runs_end_to_end_at_toy_scale_with_its_full_size_architecture(preset, tmp_path):
    try:
        run_toy_preset(preset, tmp_path, full_size=True)
    finally:  # the CelebA-HQ LDM's full-size toy models alone are 12 GB on disk
        shutil.rmtree(tmp_path, ignore_errors=True)


def run_toy_preset(preset: Path, tmp_path: Path, full_size: bool) -> None:
    """The preset at toy scale on stand-in inputs, end to end with Snakemake, and its outputs checked."""
    layered = validate(layered_config(preset))
    config = fake_inputs(toy_scale(layered, full_size=full_size), tmp_path / "inputs")
    workdir = tmp_path / "workspace"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    one_at_a_time = full_size and preset.stem in ONE_JOB_AT_A_TIME
    # full size: cifar2-lds alone is about 25 min of CPU (EK-FAC's factors), longer on a busy machine
    snakemake(workdir, "--cores", "1" if one_at_a_time else "2", timeout=4 * 3600 if full_size else 3600)
    out = workdir / "results" / config["experiment"]
    assert (out / "report" / "index.html").is_file()
    if config["lds"]["enabled"]:
        lds = pd.read_csv(out / "metrics" / "lds.csv")
        assert set(lds["method"]) == set(config["methods"]), preset.name
        assert np.isfinite(lds["lds"]).all(), lds
        model_dir = out / "models" / "full" / f"seed{config['train']['seeds'][0]}"
        check_architecture(model_dir, config["model"], layered["model"])
        check_generated_captions(out / "samples" / "full.zarr", config["data"])
    if config["shapley"]["enabled"]:
        check_shapley(out / "shapley", config["shapley"])
        model = config["shapley"].get("model") or config["model"]
        preset_model = layered["shapley"].get("model") or layered["model"]
        retrained = out / "shapley" / "models" / "coalition" / "retrain" / "full" / "seed0"
        check_architecture(retrained, model, preset_model)
        check_pruning(out / "shapley" / "models" / "pruned" / "pruning.json", model, config["shapley"])


def check_generated_captions(samples: Path, data: dict) -> None:
    """Generated images of a captioned data set carry prompts filled from its metadata (the caption
    template's fields), more than one distinct prompt; uncaptioned ones carry none."""
    generated = read_imageset(samples)
    template = (data.get("image_folder") or {}).get("caption")
    if not template:
        assert generated.captions is None
        return
    metadata = pd.read_csv(data["image_folder"]["metadata"])
    assert set(generated.captions) <= {template.format(**row) for row in metadata.to_dict("records")}
    assert len(set(generated.captions)) > 1, generated.captions


def check_pruning(record: Path, model: dict, shapley: dict) -> None:
    """The pruned model is smaller: a LoRA keeps at most the preset's share of its parameters (global
    scope) or of each adapter's rank pairs (per_adapter), a UNet loses channels."""
    pruning = json.loads(record.read_text())["pruning"]
    if model.get("family") == "lora":
        assert pruning["kind"] == "lora_rank" and pruning["scope"] == shapley["pruning"]["lora_scope"]
        rank, keep = model["lora"]["rank"], 1 - shapley["pruning"]["ratio"]
        assert pruning["rank_before"] == rank and min(pruning["ranks_after"].values()) >= 1
        if pruning["scope"] == "per_adapter":
            assert set(pruning["ranks_after"].values()) == {max(1, round(rank * keep))}
        else:
            at_least_one = set(pruning["ranks_after"].values()) == {1}  # each adapter keeps a pair
            assert pruning["parameters_after"] <= keep * pruning["parameters_before"] or at_least_one
    else:
        assert pruning["channels_after"] < pruning["channels_before"], pruning


def check_shapley(out: Path, shapley: dict) -> None:
    """Every way's values, their Shapley LDS, the agreement with retraining and the cost table are
    there and finite; the Shapley LDS is NaN (a rank correlation with constant values) exactly when
    the held-out coalitions' retrained models all measure the same property."""
    estimators = {shapley["estimator"]} | ({"datamodel"} if shapley["datamodel"]["num_coalitions"] else set())
    for estimator in estimators:
        for how in shapley["how"]:
            values = pd.read_csv(out / "values" / f"{estimator}-{how}.csv")
            assert len(values) and np.isfinite(values["value"]).all(), (estimator, how)
            assert (values["property"] == shapley["property"]["name"]).all()
    lds = pd.read_csv(out / "metrics" / "shapley_lds.csv")
    assert set(zip(lds["estimator"], lds["how"], strict=True)) == {
        (e, h) for e in estimators for h in shapley["how"]
    }
    # celebahq-ldm-shapley: its diversity (entropy over clusters) of 4 images is 0 bits for every toy
    # model (2 steps at lr 1e-4 barely move its 274M weights, and the 4 images share a cluster)
    heldout = {
        json.loads(f.read_text())["value"] for f in (out / "properties" / "retrain").glob("heldout*/*.json")
    }
    finite = np.isfinite(lds[["lds", "ci_low", "ci_high", "lds_seed_averaged"]]).all(axis=1)
    assert (finite == (len(heldout) > 1)).all(), (lds, heldout)
    agreement = pd.read_csv(out / "metrics" / "agreement.csv")
    assert set(agreement["how"]) == set(shapley["how"]) - {"retrain"}
    cost = pd.read_csv(out / "metrics" / "cost.csv")
    assert set(cost["how"]) == set(shapley["how"])
    assert np.isfinite(cost.select_dtypes("number")).all().all(), cost


ARCHITECTURE = ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types")
ARCHITECTURE += ("norm_num_groups", "attention_head_dim", "dropout", "resnet_time_scale_shift")
WIDTHS = {"block_out_channels"}


def check_architecture(model_dir: Path, model: dict, preset_model: dict) -> None:
    """The trained model is `model` (its saved UNet config, or its LoRA's rank and targets), and has the
    preset's topology: everything but the widths is the preset's."""
    if model.get("family") == "lora":
        from diffattr.families import load_model
        from diffattr.families.lora import ADAPTER

        lora = load_model(model_dir).unet.peft_config[ADAPTER]
        assert lora.r == model["lora"]["rank"] and lora.lora_alpha == model["lora"]["alpha"]
        assert (
            set(lora.target_modules) == set(model["lora"]["targets"]) == set(preset_model["lora"]["targets"])
        )
        assert (model_dir / "pytorch_lora_weights.safetensors").is_file()
        assert not (model_dir / "unet").exists()  # only the adapters are saved, never the snapshot's UNet
        return
    saved = json.loads((model_dir / "unet" / "config.json").read_text())
    assert {key: saved[key] for key in ARCHITECTURE} == {key: model[key] for key in ARCHITECTURE}
    topology = set(ARCHITECTURE) - WIDTHS
    assert {key: model[key] for key in topology} == {key: preset_model[key] for key in topology}
    assert len(model["block_out_channels"]) == len(preset_model["block_out_channels"])
