"""The files and the GPU the jobs about to run need, checked just before the first job (never in dry
runs, which need no data): data sets, image folders and their CSV, weights, a writable results folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from diffattr.errors import InputError
from diffattr.preflight.config_checks import check_planted, image_shape
from diffattr.pretrained import autoencoder_folder, check_fits, latent_shape, own_folder, unet_config
from diffattr.registry import PROPERTIES

INCEPTION_FILE = "inception-2015-12-05.pt"  # clean-fid's torchscript, as in diffattr.properties
SNAPSHOT_PARTS = ("unet", "text_encoder", "tokenizer", "vae")  # a diffusers snapshot, as in families.lora
# Image side of the fixed-size datasets (an image folder's is data.image_folder.image_size).


def check_machine(config: dict, rules: set[str], local: bool, workdir: str | Path = ".") -> None:
    """Input files of the rules about to run exist, and a requested GPU is there (local runs only)."""
    if rules:
        check_writable(config["results"], workdir)
    for key, path in needed_files(config, rules):
        if not Path(path).exists():
            raise InputError(f"config key '{key}': file not found: {path}")
    for key, model, data, prefixes in model_sections(config):
        if not any(rule.startswith(prefixes) for rule in rules):
            continue
        if model.get("family", "pixel") == "lora":
            missing = [part for part in SNAPSHOT_PARTS if not (Path(model["pretrained"]) / part).is_dir()]
            if missing:
                raise InputError(
                    f"config key '{key}.pretrained': {model['pretrained']} is not a diffusers snapshot "
                    f"(no {', '.join(missing)}/)"
                )
        elif own_folder(model):
            check_own_model(key, model, data)
    shapley = config["shapley"]
    if shapley["enabled"] and "contributors" in rules:
        data = shapley.get("data") or config["data"]
        key = "shapley.data" if shapley.get("data") else "data"
        if data["source"] == "image_folder":
            _check_image_folder(key, data, shapley)
    if config["lds"]["enabled"] and "prepare_data" in rules and config["data"]["source"] == "image_folder":
        _check_image_folder("data", config["data"], None)
    if local and config["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("config key 'device': 'cuda' requested but this machine has no CUDA device")


def needed_files(config: dict, rules: set[str]) -> list[tuple[str, str]]:
    """(config key, path) of every external input file the given rules read."""
    files = []
    shapley = config["shapley"]
    sections = []
    if config["lds"]["enabled"] and "prepare_data" in rules:
        sections.append(("data", config["data"]))
    if shapley["enabled"] and "contributors" in rules:
        sections.append(
            ("shapley.data" if shapley.get("data") else "data", shapley.get("data") or config["data"])
        )
    for key, data in sections:
        if data["source"] in ("cifar10", "cifar100"):
            files.append((f"{key}.{data['source']}_path", data[f"{data['source']}_path"]))
        elif data["source"] == "image_folder" and data.get("image_folder"):
            folder = data["image_folder"]
            files += [
                (f"{key}.image_folder.path", folder["path"]),
                (f"{key}.image_folder.metadata", folder["metadata"]),
            ]
    files += model_weights(config, rules)
    clip = config["clip"]["weights"]
    if (
        clip
        and config["lds"]["enabled"]
        and any(r.startswith(("clip_scores", "counterfactual")) for r in rules)
    ):
        files.append(("clip.weights", clip))
    prop = shapley["property"]
    if shapley["enabled"] and any(r.startswith(("coalition_property", "reference_features")) for r in rules):
        if PROPERTIES[prop["name"]].measured_with == "clip":
            files += [(f"shapley.property.clip.{k}", prop["clip"][k]) for k in ("weights", "head")]
        elif prop["features"] == "clip":
            files.append(("shapley.property.clip.weights", prop["clip"]["weights"]))
        elif prop["features"] == "inception":
            path = Path(prop["inception_path"])
            files.append(
                ("shapley.property.inception_path", str(path / INCEPTION_FILE if path.is_dir() else path))
            )
    return files


def model_sections(config: dict) -> list[tuple[str, dict, dict, tuple[str, ...]]]:
    """(config key, model section, its data section, prefixes of the rules that build or load its models)
    of each enabled branch."""
    shapley = config["shapley"]
    sections = [
        ("model", config["model"], config["data"], ("train_", "pretrained_full", "counterfactual_model"))
    ]
    if shapley["enabled"]:
        key = "shapley.model" if shapley.get("model") else "model"
        data = shapley.get("data") or config["data"]
        sections.append((key, shapley.get("model") or config["model"], data, ("coalition_model", "prune")))
    return sections


def model_weights(config: dict, rules: set[str]) -> list[tuple[str, str]]:
    """(config key, path) of the local weights a model family loads (autoencoder, Stable Diffusion
    snapshot, a user's own trained model), for the branches whose model-building rules are about to run;
    a missing required key is an error."""
    files = []
    for key, model, _, prefixes in model_sections(config):
        if not any(rule.startswith(prefixes) for rule in rules):
            continue
        required = {"latent": "vae", "lora": "pretrained"}.get(model.get("family", "pixel"))
        if required and not model.get(required):
            raise InputError(f"config key '{key}.{required}': required by family {model['family']!r}")
        files += [(f"{key}.{name}", model[name]) for name in ("vae", "pretrained") if model.get(name)]
    return files


def check_own_model(key: str, model: dict, data: dict) -> None:
    """A user's trained model folder (`key`.pretrained) holds a UNet2DModel that denoises the data's images
    (pixel) or the latents the autoencoder at `key`.vae makes of them (latent), checked from the folders'
    JSON (the job that loads the weights checks them again)."""
    config = unet_config(model, f"{key}.pretrained")
    shape = image_shape(data)
    if shape is None:
        return
    if model.get("family", "pixel") == "latent":
        vae = autoencoder_folder(model["vae"]) / "config.json"
        if not vae.is_file():
            raise InputError(f"config key '{key}.vae': no autoencoder (config.json) at {model['vae']}")
        shape = latent_shape(json.loads(vae.read_text()), shape)
        inputs = f"the latents of {key}.vae ({model['vae']})"
    else:
        inputs = "the data's images"
    check_fits(config, shape, f"{key}.pretrained", inputs)


def check_writable(results: str, workdir: str | Path) -> None:
    """The results folder may be anywhere (a symlink out of the repository too), but must be a folder this
    user can write, or be creatable in one; checked before the first job rather than failing in it."""
    root = Path(workdir) / results
    probe = root
    while not probe.exists():
        if probe.is_symlink():
            raise InputError(f"config key 'results': {probe} is a symlink to nowhere ({os.readlink(probe)})")
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"config key 'results': {results!r} cannot be created, {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"config key 'results': {results!r} is not writable ({probe.resolve()})")


def _check_image_folder(key: str, data: dict, shapley: dict | None) -> None:
    """The metadata CSV reads (see diffattr.data.read_metadata), has the needed columns, rows and a value in
    every contributor cell, and every file it lists exists; `shapley` is given for the contributor branch."""
    import pandas as pd

    from diffattr.data import fill_captions, missing_cell, read_metadata

    folder = data["image_folder"]
    csv = Path(folder["metadata"])
    table: pd.DataFrame = read_metadata(csv, folder, key)
    if data["n_train"] + data["n_val"] > len(table):
        raise InputError(
            f"config key '{key}.n_train': {data['n_train']} + {data['n_val']} images requested, {csv} lists "
            f"{len(table)}"
        )
    if shapley is not None:
        spec = shapley["contributors"]
        column = spec["column"] if spec["by"] == "column" else None
        if column is not None and column not in table.columns:
            raise InputError(
                f"config key 'shapley.contributors.column': no column {column!r} in {csv} "
                f"(has {list(table.columns)})"
            )
        if column is not None:
            missing_cell(table, column, csv)
        counted = column or (folder.get("label_column") if spec["by"] == "class" else None)
        if counted:
            check_planted(
                spec["planted"]["ids"], table[counted].nunique(), f" values of {counted!r} in {csv}"
            )
        labels, prop = folder.get("label_column"), shapley["property"]
        if (
            prop["name"] != "aesthetic"
            and prop["features"] == "classifier"
            and labels
            and table[labels].nunique() < 2
        ):
            raise InputError(
                f"config key 'shapley.property.features': 'classifier' needs at least 2 labels, column "
                f"{labels!r} of {csv} has 1; use features: inception"
            )
    if folder.get("caption"):
        fill_captions(folder["caption"], table, key)
    root = Path(folder["path"])
    missing = [name for name in table[folder["file_column"]] if not (root / name).is_file()]
    if missing:
        raise InputError(
            f"config key '{key}.image_folder.path': {len(missing)} file(s) listed in {csv} not found, "
            f"first {root / missing[0]}"
        )
