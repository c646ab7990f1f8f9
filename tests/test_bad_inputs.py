"""A corpus of bad inputs: each stops with one line naming the key or file, no traceback, nothing written
outside results/ and nothing that looks finished. Most cases call the checks the Snakefile calls
(validate, then diffattr.preflight) in this process; a smaller set goes through the real `snakemake`."""

from __future__ import annotations

import copy
import os
import shutil

import numpy as np
import pytest
import yaml
from snakemake.cli import parse_config
from snakemake.utils import update_config

from diffattr.config import validate
from diffattr.errors import InputError
from diffattr.preflight import (
    DIGITS_CLASS_SIZES,
    DRY_RUN_NOTICE,
    INCEPTION_FILE,
    check_config,
    check_machine,
    check_overlays,
    is_dry_run,
    main,
)
from diffattr.store import read_npz, read_table, write_arrays, write_npz
from tests.workflow_helpers import ROOT, make_workspace, snakemake


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def checked(overlay: dict, workdir=ROOT / "results") -> dict:
    """The default merged with `overlay` as Snakemake merges config files, validated and pre-flighted."""
    config = default_config()
    update_config(config, copy.deepcopy(overlay))
    config = validate(config)
    check_config(config, workdir, ROOT)
    return config


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


FOLDER = {"path": "imgs", "metadata": "imgs/meta.csv"}  # relative: only config-level checks read them
IMAGE_FOLDER_DATA = {"source": "image_folder", "image_folder": FOLDER, "n_train": 20, "n_val": 2}


def levels(n: int, channels: int = 16) -> dict:
    """A pixel UNet of n levels of `channels` each."""
    return {
        "block_out_channels": [channels] * n,
        "down_block_types": ["DownBlock2D"] * n,
        "up_block_types": ["UpBlock2D"] * n,
    }


CONFIG_CASES = [
    # path safety
    ({"experiment": ".."}, "config key 'experiment': '..' is not a safe file name"),
    ({"experiment": "."}, "config key 'experiment': '.' is not a safe file name"),
    ({"experiment": "a/b"}, "config key 'experiment': 'a/b' is not a safe file name"),
    ({"experiment": "x..y"}, "config key 'experiment': 'x..y' is not a safe file name"),
    ({"results": ""}, "config key 'results': '' should be non-empty"),
    ({"results": "/"}, "config key 'results': '/' is the filesystem root"),
    ({"results": "../.."}, "config key 'results': '../..' resolves to"),
    ({"results": ".."}, "config key 'results': '..' resolves to"),
    ({"methods": {"../../../escape": {"kind": "pixel"}}}, "config key 'methods': '../../../escape' is not"),
    ({"methods": {".hidden": {"kind": "pixel"}}}, "config key 'methods': '.hidden' is not a safe"),
    ({"featurizers": {"a/b": {"output": "loss"}}}, "config key 'featurizers': 'a/b' is not a safe"),
    # training and models
    ({"train": {"steps": None, "epochs": None}}, "config keys 'train.steps' and 'train.epochs': both null"),
    (
        {"shapley": {"train": {"steps": None, "epochs": None}}},
        "config keys 'shapley.train.steps' and 'shapley.train.epochs': both null",
    ),
    (
        {"model": {"block_out_channels": [12, 20], "norm_num_groups": 8}},
        "config key 'model.norm_num_groups': 8 groups do not divide 12 channels",
    ),
    (
        {"shapley": {"model": {"block_out_channels": [16, 20], "norm_num_groups": 8}}},
        "config key 'shapley.model.norm_num_groups': 8 groups do not divide 20",
    ),
    (
        {
            "model": {
                "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
                "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
                "attention_head_dim": 12,
            }
        },
        "config key 'model.attention_head_dim': 12 does not divide the 32 channels",
    ),
    # schedules
    ({"lds": {"timesteps": 2000}}, "config key 'lds.timesteps': 2000 is more than scheduler.num_train"),
    (
        {"featurizers": {"trak": {"timesteps": 1001}}},
        "config key 'featurizers.trak.timesteps': 1001 is more than",
    ),
    ({"generate": {"num_inference_steps": 5000}}, "config key 'generate.num_inference_steps': 5000"),
    (
        {"shapley": {"property": {"num_inference_steps": 1500}}},
        "config key 'shapley.property.num_inference_steps': 1500",
    ),
    # fractions that round to nothing (or to everything)
    ({"lds": {"alpha": 0.001}}, "config key 'lds.alpha': 0.001 of classes of 150 images keeps none"),
    ({"lds": {"alpha": 0.999}}, "config key 'lds.alpha': 0.999 of classes of 150 images keeps all"),
    (
        {"lds": {"heldout_fraction": 0.001}},
        "config key 'lds.heldout_fraction': 0.001 of the 56 val targets is 0",
    ),
    (
        # 1 counterfactual target: 200 generated images leave 2 not held out
        {
            "lds": {"heldout_fraction": 0.9913},
            "generate": {"num_images": 200},
            "counterfactual": {"num_targets": 1},
        },
        "config key 'lds.heldout_fraction': 0.9913 of the 56 val targets is 56",
    ),
    (
        {"shapley": {"heldout": {"alpha": 0.01}}},
        "config key 'shapley.heldout.alpha': 0.01 of 10 contributors",
    ),
    (
        {"shapley": {"counterfactual": {"fraction": 0.01}}},
        "config key 'shapley.counterfactual.fraction': 0.01 of 10 contributors removes none",
    ),
    # dataset classes and sizes
    ({"data": {"classes": [0, 12]}}, "config key 'data.classes': class 12 does not exist in digits"),
    ({"data": {"n_train": 400}}, "config key 'data.n_train': 400 images over 2 classes need 200 of class 0"),
    ({"data": {"n_val": 100}}, "config key 'data.n_val': 100 validation images over 2 classes need 50"),
    (
        {"shapley": {"data": {"n_train": 1900}}},
        "config key 'shapley.data.n_train': 1900 images over 10 classes need 190 of class 0",
    ),
    (
        {"data": {"source": "cifar10", "classes": [1, 7], "n_train": 12000}},
        "config key 'data.n_train': 12000 images over 2 classes need 6000 of class 1, which has 5000",
    ),
    (
        {"data": {"source": "cifar100", "classes": [4, 5], "n_val": 300}},
        "config key 'data.n_val': 300 validation images over 2 classes need 150 of class 4, which has 100",
    ),
    # contributors
    (
        {"shapley": {"data": {"classes": [3], "n_train": 100}}},
        "config key 'shapley.contributors': 1 contributor from shapley.data (by class)",
    ),
    (
        {"shapley": {"contributors": {"by": "random", "group_size": 300}}},
        "config key 'shapley.contributors': 1 contributor",
    ),
    (
        {"shapley": {"contributors": {"by": "random", "group_size": 301}}},
        "config key 'shapley.contributors.group_size': 301 is more than 'shapley.data.n_train'",
    ),
    (
        {"shapley": {"data": IMAGE_FOLDER_DATA}},
        "config key 'shapley.contributors': 1 contributor from shapley.data (by class)",
    ),
    # sizes a later job would trip on, decided from the config
    ({"evaluate": {"top_k": 301}}, "config key 'evaluate.top_k': 301 is more than the 300 training images"),
    (
        {"shapley": {"property": {"name": "diversity", "clusters": 301}}},
        "config key 'shapley.property.clusters': 301 clusters need at least as many reference images, "
        "'shapley.data.n_train' is 300",
    ),
    (
        {
            "shapley": {
                "data": IMAGE_FOLDER_DATA,
                "contributors": {"by": "column", "column": "artist"},
                "property": {"name": "precision"},
            }
        },
        "config key 'shapley.property.features': 'classifier' is trained on the labels of shapley.data, "
        "which has none (no 'shapley.data.image_folder.label_column')",
    ),
    (
        {"shapley": {"property": {"name": "inception_score", "features": "clip"}}},
        "config key 'shapley.property.features': 'clip' gives embeddings, not the label probabilities that "
        "inception_score needs; use inception or classifier",
    ),
    (
        {"shapley": {"contributors": {"planted": {"ids": [8, 10]}}}},
        "config key 'shapley.contributors.planted.ids': [10] name no contributor; there are 10 (ids 0-9)",
    ),
    (
        {"data": {"source": "image_folder", "image_folder": {**FOLDER, "image_size": 6}}, "model": levels(3)},
        "config key 'model.block_out_channels': 3 levels halve 'data.image_folder.image_size' 6 as "
        "6 -> 3 -> 2",
    ),
    (
        {"shapley": {"model": levels(5, 8)}},
        "config key 'shapley.model.block_out_channels': 5 levels halve digits images of 8x8 as "
        "8 -> 4 -> 2 -> 1 -> 1, which the up path cannot double back; the image side must be a multiple "
        "of 16",
    ),
    (
        {"featurizers": {"trak": {"dim": 163986}}},
        "config key 'featurizers.trak.dim': 163986 is more than the 163985 parameters of the model",
    ),
    (
        {"shapley": {"pruning": {"ratio": 0.99}}},
        "config key 'shapley.pruning.ratio': 0.99 cannot be reached on 'model': every GroupNorm group keeps "
        "a channel, so even its widest level (32 channels, 8 groups) loses at most 0.75",
    ),
    # unbounded or unnamed
    (
        {"lds": {"num_subsets": 1000000}},
        "config key 'lds.num_subsets': 1000000 is greater than the maximum of 4096",
    ),
    ({"lds": {"train_seeds": [0, 0]}}, "config key 'lds.train_seeds': [0, 0] has non-unique elements"),
    ({"lds": {"noise_seeds": [3, 3]}}, "config key 'lds.noise_seeds': [3, 3] has non-unique elements"),
    (
        {"shapley": {"heldout": {"seeds": [1, 1]}}},
        "config key 'shapley.heldout.seeds': [1, 1] has non-unique",
    ),
    (
        {"generate": {"guidance_scale": 7.5}},
        "config key 'generate.guidance_scale': guidance 7.5 needs a text-conditioned model; 'model.family' "
        "is 'pixel'",
    ),
    (
        {"shapley": {"property": {"guidance_scale": 2}}},
        "config key 'shapley.property.guidance_scale': guidance 2 needs a text-conditioned model",
    ),
    # schema-level, for completeness of the corpus
    ({"lds": {"num_subsets": "many"}}, "config key 'lds.num_subsets': 'many' is not of type 'integer'"),
    ({"device": "gpu"}, "config key 'device': 'gpu' is not one of"),
]


@pytest.mark.parametrize("overlay, expected", CONFIG_CASES, ids=[c[1][:60] for c in CONFIG_CASES])
def test_bad_config_overlay_stops_with_one_line_naming_the_key(overlay, expected):
    with pytest.raises(InputError) as err:
        checked(overlay)
    assert one_line(err).startswith(expected), str(err.value)


CLI_CASES = [
    ("lds={alpha: two}", "config key 'lds.alpha': 'two' is not of type 'number'"),
    ("methods={}", "config key 'methods' in --config: empty, so it changes nothing"),
    ("data={classes: [0, 1, 1]}", "config key 'data.classes': [0, 1, 1] has non-unique elements"),
    ("experiment=../x", "config key 'experiment': '../x' is not a safe file name"),
    ("lds={num_subsets: 1.5}", "config key 'lds.num_subsets': 1.5 is not of type 'integer'"),
    ("lds={alpha: [0.3}", "config key 'lds': '{alpha: [0.3}' is not of type 'object'"),
]


@pytest.mark.parametrize("value, expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_line_config_value(value, expected):
    """`--config KEY=VALUE` as Snakemake parses it, then the Snakefile's checks."""
    cli = parse_config([value])
    with pytest.raises(InputError) as err:
        check_overlays([], cli)
        checked(cli)
    assert one_line(err).startswith(expected), str(err.value)


def test_results_tilde_is_the_home_folder_not_a_folder_named_tilde():
    config = checked({"results": "~/diffattr-results"})
    assert config["results"] == os.path.expanduser("~/diffattr-results")
    assert not (ROOT / "~").exists()


def test_demo_featurizer_dims_and_pruning_ratio_are_accepted():
    """The refusals above sit just past what the demo's 163,985-parameter UNet allows."""
    config = checked({"featurizers": {"trak": {"dim": 163985}}, "shapley": {"pruning": {"ratio": 0.75}}})
    assert config["featurizers"]["trak"]["dim"] == 163985


def test_nested_command_line_values_and_integer_floats_are_accepted():
    config = checked(parse_config(["lds={alpha: 0.3, num_subsets: 32.0}", "data={classes: [0, 1]}"]))
    assert config["lds"]["alpha"] == 0.3 and config["lds"]["num_subsets"] == 32
    assert type(config["lds"]["num_subsets"]) is int and config["data"]["classes"] == [0, 1]


FILE_CASES = [
    ("methods: {}\n", "config key 'methods' in {file}: empty, so it changes nothing"),
    ("shapley:\n  property: {}\n", "config key 'shapley.property' in {file}: empty"),
    ("lds:\n  alpha: [0.3\n  num_subsets: 3\n", "{file}:3:"),
    ("lds:\n\talpha: 0.3\n", "{file}:2:1: YAML syntax error"),
    ("- experiment: x\n", "{file}: a config file must be a mapping of keys, not list"),
    ("", "{file}: empty; a config file must be a mapping of keys"),
    ("# only a comment\n", "{file}: empty; a config file must be a mapping of keys"),
]


@pytest.mark.parametrize(
    "text, expected",
    FILE_CASES,
    ids=["empty-methods", "empty-nested", "bracket", "tab", "list", "empty", "comment-only"],
)
def test_bad_config_file_names_file_and_line(tmp_path, text, expected):
    file = tmp_path / "overlay.yaml"
    file.write_text(text)
    with pytest.raises(InputError) as err:
        check_overlays([file])
    assert one_line(err).startswith(expected.format(file=file)), str(err.value)


def test_config_file_checker_names_file_line_and_column(tmp_path, capsys):
    """`python -m diffattr.preflight FILE`: where Snakemake's own YAML error names neither."""
    file = tmp_path / "broken.yaml"
    file.write_text("lds:\n  alpha: [0.3\n  num_subsets: 3\n")
    assert main([str(file)]) == 1
    assert (
        capsys.readouterr().err
        == f"diffattr: {file}:3:14: YAML syntax error: expected ',' or ']', but got ':'\n"
    )
    assert main([str(ROOT / "config.yaml")]) == 0


@pytest.mark.parametrize("text, what", [("", "empty"), ("- a: 1\n", "a config file must be a mapping")])
def test_config_file_checker_names_an_empty_or_list_file(tmp_path, capsys, text, what):
    """Snakemake refuses both without the file's name ("Config file must be given as JSON or YAML with
    keys at top level"); the checker names it."""
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("lds: {alpha: 0.3}\n")
    bad.write_text(text)
    assert main([str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"diffattr: {bad}: {what}") and err.count("\n") == 1, err


def test_digits_class_sizes_are_scikit_learns():
    from sklearn.datasets import load_digits

    assert tuple(np.bincount(load_digits().target)) == DIGITS_CLASS_SIZES


def test_inception_file_name_is_the_one_properties_loads():
    from diffattr import properties

    assert properties.INCEPTION_FILE == INCEPTION_FILE


def test_dry_run_flags():
    assert is_dry_run(["snakemake", "-n"]) and is_dry_run(["snakemake", "--dry-run", "--cores", "1"])
    assert is_dry_run(["snakemake", "-np"]) and not is_dry_run(["snakemake", "--cores", "1"])


# Input files, checked before the first job of a real run.
MACHINE_CASES = [
    (
        {"data": {"source": "cifar10", "classes": [1, 7], "cifar10_path": "nowhere/c10.tar.gz"}},
        {"prepare_data"},
        "config key 'data.cifar10_path': file not found: nowhere/c10.tar.gz",
    ),
    (
        {
            "shapley": {
                "data": {"source": "cifar100", "classes": [1, 2], "cifar100_path": "no.tgz"},
                "contributors": {"planted": {"ids": [1]}},  # the demo's 8 and 9 are not among 2 classes
            }
        },
        {"contributors"},
        "config key 'shapley.data.cifar100_path': file not found: no.tgz",
    ),
    (
        {"shapley": {"property": {"features": "inception", "inception_path": "no/inception"}}},
        {"coalition_property"},
        "config key 'shapley.property.inception_path': file not found: no/inception",
    ),
    (
        {"shapley": {"property": {"name": "aesthetic", "clip": {"weights": "no/clip.bin"}}}},
        {"coalition_property"},
        "config key 'shapley.property.clip.weights': file not found: no/clip.bin",
    ),
    (  # properties measured in batch jobs (shapley.models_per_job > 1), as the demo does
        {"shapley": {"property": {"name": "fid", "features": "inception", "inception_path": "no/inc"}}},
        {"coalition_model_batch0", "coalition_property_batch0"},
        "config key 'shapley.property.inception_path': file not found: no/inc",
    ),
    (
        {"clip": {"weights": "no/clip-b32.bin"}, "methods": {"CLIP": {"kind": "clip"}}},
        {"clip_scores"},
        "config key 'clip.weights': file not found: no/clip-b32.bin",
    ),
]


@pytest.mark.parametrize(
    "overlay, rules, expected",
    MACHINE_CASES,
    ids=["cifar10", "cifar100", "inception", "clip", "inception-batch", "clip-method"],
)
def test_missing_input_file_is_found_before_the_first_job(overlay, rules, expected):
    config = checked(overlay)
    with pytest.raises(InputError) as err:
        check_machine(config, rules, local=True)
    assert one_line(err).startswith(expected), str(err.value)
    check_machine(config, set(), local=True)  # no job needs it (data already prepared): no error


def image_folder(tmp_path, rows: int = 6, header: str = "file,artist") -> dict:
    """A folder of `rows` 8x8 PNGs listed in meta.csv; the config overlay of a shapley branch on it."""
    from PIL import Image

    lines = [header]
    for i in range(rows):
        Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{'ab'[i % 2]}")
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n")
    folder = {"path": str(tmp_path), "metadata": str(tmp_path / "meta.csv"), "image_size": 8}
    folder["label_column"] = "artist"  # labels for the property's classifier
    return {
        "lds": {"enabled": False},
        "shapley": {
            "data": {"source": "image_folder", "image_folder": folder, "n_train": 4, "n_val": 1},
            "contributors": {"by": "column", "column": "artist", "planted": {"ids": []}},
            "heldout": {"num_coalitions": 2},
        },
    }


@pytest.mark.parametrize(
    "damage, expected",
    [
        (
            lambda d: (d / "3.png").unlink(),
            "config key 'shapley.data.image_folder.path': 1 file(s) listed in",
        ),
        (
            lambda d: (d / "meta.csv").write_text("name,artist\n0.png,a\n"),
            "config key 'shapley.data.image_folder",
        ),
        (
            lambda d: (d / "meta.csv").write_text("file\n0.png\n1.png\n2.png\n3.png\n4.png\n"),
            "config key 'shapl",
        ),
        (
            lambda d: (d / "meta.csv").write_text("file,artist\n0.png,a\n"),
            "config key 'shapley.data.n_train'",
        ),
    ],
    ids=["missing-image", "no-file-column", "no-contributor-column", "too-few-rows"],
)
def test_image_folder_csv_problems_are_found_before_the_first_job(tmp_path, damage, expected):
    config = checked(image_folder(tmp_path))
    check_machine(config, {"contributors"}, local=True)
    damage(tmp_path)
    with pytest.raises(InputError) as err:
        check_machine(config, {"contributors"}, local=True)
    assert one_line(err).startswith(expected), str(err.value)


def test_snapshot_without_unet_is_found_before_the_first_job(tmp_path):
    snapshot = tmp_path / "sd"
    for part in ("text_encoder", "tokenizer", "vae"):
        (snapshot / part).mkdir(parents=True)
    config = checked(
        {"model": {"family": "lora", "pretrained": str(snapshot)}, "counterfactual": {"enabled": False}}
    )
    with pytest.raises(InputError) as err:
        check_machine(config, {"train_full"}, local=True, workdir=tmp_path)
    assert (
        one_line(err) == f"config key 'model.pretrained': {snapshot} is not a diffusers snapshot (no unet/)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sd"]


def duplicated(d):
    """Every row of meta.csv listed twice."""
    lines = (d / "meta.csv").read_text().splitlines()
    (d / "meta.csv").write_text("\n".join(lines + lines[1:]) + "\n")


def contributor_nan(d):
    text = (d / "meta.csv").read_text()
    (d / "meta.csv").write_text(text.replace("1.png,b", "1.png,NaN"))


def single_label(d):
    lines = (d / "meta.csv").read_text().splitlines()
    (d / "meta.csv").write_text("\n".join([lines[0] + ",kind"] + [line + ",x" for line in lines[1:]]) + "\n")


FOLDER_CASES = {
    "duplicate-rows": ({}, duplicated, "{csv}: '0.png' is listed twice (lines 2 and 8), 6 repeated row(s)"),
    "nan-contributor": (
        {},
        contributor_nan,
        "{csv}: empty cell in column 'artist' (line 3), 'NaN'; 1 such row",
    ),
    "planted-beyond": (
        {"contributors": {"planted": {"ids": [2]}}},
        lambda d: None,
        "config key 'shapley.contributors.planted.ids': [2] name no contributor; there are 2 values of "
        "'artist' in {csv} (ids 0-1)",
    ),
    "one-label-classifier": (
        {"data": {"image_folder": {"label_column": "kind"}}},
        single_label,
        "config key 'shapley.property.features': 'classifier' needs at least 2 labels, column 'kind' of "
        "{csv} has 1",
    ),
}


@pytest.mark.parametrize("overlay, damage, expected", FOLDER_CASES.values(), ids=FOLDER_CASES.keys())
def test_image_folder_content_is_refused_before_the_first_job(tmp_path, overlay, damage, expected):
    config_overlay = image_folder(tmp_path)
    config_overlay["shapley"] = deep_merge(config_overlay["shapley"], overlay)
    config = checked(config_overlay)
    damage(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(InputError) as err:
        check_machine(config, {"contributors"}, local=True, workdir=tmp_path)
    assert one_line(err).startswith(expected.format(csv=tmp_path / "meta.csv")), str(err.value)
    assert tree(tmp_path) == before


def deep_merge(base: dict, extra: dict) -> dict:
    merged = copy.deepcopy(base)
    update_config(merged, copy.deepcopy(extra))
    return merged


def test_semicolon_csv_with_a_bom_is_read(tmp_path, caplog):
    """A spreadsheet's export: UTF-8 with a byte-order mark, `;` between columns."""
    from diffattr.data import load_splits

    overlay = image_folder(tmp_path)
    csv = tmp_path / "meta.csv"
    csv.write_text("\ufeff" + csv.read_text().replace(",", ";"), encoding="utf-8")
    config = checked(overlay)
    check_machine(config, {"contributors"}, local=True, workdir=tmp_path)
    with caplog.at_level("INFO", logger="diffattr"):
        train = load_splits(config["shapley"]["data"], "shapley.data")["train"]
    assert sorted(train.metadata) == ["artist", "file"] and set(train.metadata["artist"]) == {"a", "b"}
    assert f"{csv}: read as ';'-separated (no comma in its header)" in caplog.messages


def test_images_of_other_modes_and_sizes_are_converted_with_one_line_each(tmp_path, caplog):
    from PIL import Image

    from diffattr.data import load_splits

    data = checked(image_folder(tmp_path))["shapley"]["data"]
    Image.fromarray(np.full((8, 8, 4), 90, np.uint8), "RGBA").save(tmp_path / "1.png")
    Image.fromarray(np.full((8, 8), 90, np.uint8), "L").save(tmp_path / "2.png")
    Image.fromarray(np.full((8, 8), 90, np.uint8), "L").save(tmp_path / "3.png")
    Image.fromarray(np.full((12, 10, 3), 90, np.uint8)).save(tmp_path / "4.png")
    with caplog.at_level("INFO", logger="diffattr"):
        splits = load_splits({**data, "n_train": 5, "n_val": 1}, "shapley.data")
    assert splits["train"].images.shape[1:] == (3, 8, 8)
    assert caplog.messages == [
        "converted to RGB: 2 L (grayscale), 1 RGBA (alpha dropped) image(s)",
        "resized to 8x8: 1 of 10x12 image(s)",
    ]


def test_truncated_cifar_archive_is_one_line_saying_so(tmp_path):
    from diffattr.data import load_splits
    from tests.test_data import fake_cifar10

    path = tmp_path / "cifar-10-python.tar.gz"
    fake_cifar10(path)
    truncate(path, path.stat().st_size // 2)
    with pytest.raises(InputError) as err:
        load_splits(
            {
                "source": "cifar10",
                "cifar10_path": str(path),
                "classes": [1, 7],
                "n_train": 8,
                "n_val": 2,
                "seed": 0,
            }
        )
    message = one_line(err)
    assert (
        message.startswith(f"{path}: truncated or damaged")
        and "Download cifar-10-python.tar.gz again" in message
    )


def test_job_time_messages_name_the_contributor_branch_key(tmp_path):
    from diffattr.data import load_splits

    data = checked(image_folder(tmp_path))["shapley"]["data"]
    (tmp_path / "meta.csv").unlink()
    with pytest.raises(InputError) as err:
        load_splits(data, "shapley.data")
    assert (
        one_line(err)
        == f"config key 'shapley.data.image_folder.metadata': file not found: {tmp_path / 'meta.csv'}"
    )


def test_results_may_be_a_symlink_out_of_the_repository(tmp_path):
    """Documented: results may be anywhere the user points it; it must be writable (checked below)."""
    workdir, elsewhere = tmp_path / "w", tmp_path / "other-disk"
    workdir.mkdir(), elsewhere.mkdir()
    (workdir / "results").symlink_to(elsewhere)
    config = checked({}, workdir=workdir)
    check_machine(config, {"prepare_data"}, local=True, workdir=workdir)
    assert not list(elsewhere.iterdir())


@pytest.mark.parametrize("case", ["under-a-file", "dangling-symlink", "not-writable"])
def test_unwritable_results_are_refused_before_the_first_job(tmp_path, monkeypatch, case):
    workdir = tmp_path / "w"
    workdir.mkdir()
    results = "results"
    if case == "under-a-file":
        (workdir / "afile").write_text("x")
        results, expected = (
            "afile/results",
            f"'afile/results' cannot be created, {workdir / 'afile'} is not a folder",
        )
    elif case == "dangling-symlink":
        (workdir / "results").symlink_to(tmp_path / "gone")
        expected = f"{workdir / 'results'} is a symlink to nowhere ({tmp_path / 'gone'})"
    else:
        monkeypatch.setattr(os, "access", lambda path, mode: False)  # root may write anywhere
        expected = f"'results' is not writable ({workdir.resolve()})"
    config = checked({"results": results}, workdir=workdir)
    before = tree(tmp_path)
    with pytest.raises(InputError) as err:
        check_machine(config, {"prepare_data"}, local=True, workdir=workdir)
    assert one_line(err) == f"config key 'results': {expected}"
    assert tree(tmp_path) == before


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_refused_before_the_first_job_but_not_on_a_cluster():
    config = checked({"device": "cuda"})
    with pytest.raises(InputError) as err:
        check_machine(config, {"train_full"}, local=True)
    assert one_line(err) == "config key 'device': 'cuda' requested but this machine has no CUDA device"
    check_machine(config, {"train_full"}, local=False)  # jobs run on GPU nodes, not on the login node


# Damaged files that a job reads: the loaders raise one InputError naming the file.
def image_store(path, images=None):
    images = (
        np.random.default_rng(0).integers(0, 255, (5, 1, 8, 8), dtype=np.uint8) if images is None else images
    )
    n = len(images)
    arrays = {
        "images": images,
        "labels": np.arange(n),
        "contributors": np.arange(n),
        "source_index": np.arange(n),
    }
    write_arrays(path, arrays)
    return path


def first_chunk(store):
    return next(f for f in sorted((store / "images").rglob("*")) if f.is_file() and f.name != "zarr.json")


def truncate(file, keep: int = 10):
    file.write_bytes(file.read_bytes()[:keep])


ZARR_CASES = {
    "no-group-metadata": (lambda s: (s / "zarr.json").unlink(), "damaged or not written by diffattr"),
    "truncated-chunk": (lambda s: truncate(first_chunk(s)), "(images): damaged or not written by diffattr"),
    "garbage-array-metadata": (lambda s: (s / "images" / "zarr.json").write_text("{x"), "(images): damaged"),
    "missing-array": (lambda s: shutil.rmtree(s / "labels"), "no array 'labels'"),
    "empty-folder": (lambda s: (shutil.rmtree(s), s.mkdir()), "damaged or not written by diffattr"),
    "file-not-folder": (
        lambda s: (shutil.rmtree(s), s.write_text("x")),
        "damaged or not written by diffattr",
    ),
    "float-images": (
        lambda s: image_store(s, np.zeros((5, 1, 8, 8), np.float32)),
        "images are float32 (5, 1, 8, 8), expected uint8",
    ),
    "images-without-channels": (
        lambda s: image_store(s, np.zeros((5, 8, 8), np.uint8)),
        "images are uint8 (5, 8, 8), expected uint8 (N, 1 or 3, H, W)",
    ),
}


@pytest.mark.parametrize("damage, expected", ZARR_CASES.values(), ids=ZARR_CASES.keys())
def test_damaged_image_store_is_one_line_naming_the_file(tmp_path, damage, expected):
    from diffattr.data import read_imageset

    store = image_store(tmp_path / "train.zarr")
    damage(store)
    with pytest.raises(InputError) as err:
        read_imageset(store)
    message = one_line(err)
    assert message.startswith(str(store)) and expected in message, message


NPZ_CASES = {
    "truncated": lambda f: truncate(f, f.stat().st_size // 2),
    "empty": lambda f: f.write_bytes(b""),
    "random-bytes": lambda f: f.write_bytes(os.urandom(200)),
    "pickled-objects": lambda f: np.savez(f, masks=np.array([{"code": 1}], dtype=object)),
    "missing-array": lambda f: np.savez(f, other=np.ones(3)),
}


@pytest.mark.parametrize("damage", NPZ_CASES.values(), ids=NPZ_CASES.keys())
def test_damaged_npz_is_one_line_naming_the_file(tmp_path, damage):
    path = tmp_path / "lds.npz"
    write_npz(path, masks=np.ones((3, 4), bool))
    damage(path)
    with pytest.raises(InputError) as err:
        read_npz(path)["masks"]
    assert one_line(err).startswith(str(path)), str(err.value)


def test_csv_with_missing_columns_names_the_file_and_columns(tmp_path):
    path = tmp_path / "contributors.csv"
    path.write_text("contributor,name\n0,a\n1,b\n")
    with pytest.raises(InputError) as err:
        read_table(path, ["contributor", "name", "images"])
    assert one_line(err) == f"{path}: no column(s) ['images'] (has ['contributor', 'name'])"


def bad_image(kind: str):
    from PIL import Image

    if kind == "16-bit":
        return lambda f: Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 900).save(f)
    if kind == "float":
        return lambda f: Image.fromarray(np.random.rand(8, 8).astype(np.float32)).save(f.with_suffix(".tiff"))
    if kind == "truncated":
        return lambda f: truncate(f, 40)
    return lambda f: f.write_text("not an image")


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("16-bit", "I;16 image (16-bit, 32-bit or float pixels)"),
        ("float", "F image (16-bit, 32-bit or float pixels)"),
        ("truncated", "cannot read image"),
        ("text", "cannot read image"),
    ],
)
def test_wrong_image_in_an_image_folder_names_the_file(tmp_path, kind, expected):
    from diffattr.data import load_splits

    overlay = image_folder(tmp_path)
    data = checked(overlay)["shapley"]["data"]
    target = tmp_path / "2.png"
    bad_image(kind)(target)
    if kind == "float":
        target.unlink()
        (tmp_path / "meta.csv").write_text((tmp_path / "meta.csv").read_text().replace("2.png", "2.tiff"))
    with pytest.raises(InputError) as err:
        load_splits({**data, "n_train": 5, "n_val": 1})
    message = one_line(err)
    assert "2." in message and expected in message, message


# Through the real command line: exit code, one line, no traceback, nothing outside results/.
CLI = {"experiment": "bad"}  # the embedded default under another name


def tree(path) -> set[str]:
    """Every file and folder under `path`, except Snakemake's own bookkeeping."""
    return {str(p.relative_to(path)) for p in path.rglob("*") if ".snakemake" not in p.parts}


def run_and_check(workdir, *args, expected: str, finished: list[str] = ()) -> None:
    repo_before, work_before = set(os.listdir(ROOT)), tree(workdir)
    result = snakemake(workdir, *args, check=False, timeout=600)
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.startswith("diffattr:")]
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-4000:]
    errors = [line for line in lines if line != DRY_RUN_NOTICE and "gradient stores" not in line]
    assert len(errors) == 1 and expected in errors[0], lines
    assert set(os.listdir(ROOT)) == repo_before
    outside = {p for p in tree(workdir) - work_before if not p.startswith("results")}
    assert not outside, outside
    for path in finished:
        assert not (workdir / path).exists(), f"{path} looks finished"


def test_cli_unsafe_experiment_name_in_a_config_file(tmp_path):
    workdir = make_workspace(tmp_path / "w", CLI)
    (workdir / "escape.yaml").write_text("experiment: '..'\n")
    run_and_check(
        workdir, "-n", "--configfile", str(workdir / "escape.yaml"), expected="config key 'experiment': '..'"
    )


def test_cli_empty_section_in_a_config_file(tmp_path):
    workdir = make_workspace(tmp_path / "w", CLI)
    (workdir / "fewer.yaml").write_text("methods: {}\n")
    run_and_check(
        workdir, "-n", "--configfile", str(workdir / "fewer.yaml"), expected="config key 'methods' in "
    )


def test_cli_nested_config_value_is_accepted_and_the_dry_run_says_what_it_skips(tmp_path):
    workdir = make_workspace(tmp_path / "w", CLI)
    result = snakemake(workdir, "-n", "--config", "lds={alpha: 0.3, num_subsets: 4.0}")
    assert DRY_RUN_NOTICE in result.stderr.splitlines()


def test_cli_missing_dataset_stops_before_any_job(tmp_path):
    workdir = make_workspace(tmp_path / "w", {**CLI, "data": {"source": "cifar10", "classes": [1, 7]}})
    run_and_check(
        workdir,
        "--cores",
        "1",
        expected="config key 'data.cifar10_path': file not found: data/cifar-10-python.tar.gz",
    )
    assert not (workdir / "results").exists()


def test_cli_damaged_store_fails_its_job_cleanly(tmp_path):
    workdir = make_workspace(tmp_path / "w", CLI)
    data = workdir / "results" / "bad" / "data"
    for split in ("train", "val"):
        image_store(data / f"{split}.zarr")
    truncate(workdir / "results/bad/data/train.zarr/labels/zarr.json", 30)
    run_and_check(
        workdir,
        "--cores",
        "1",
        "results/bad/subsets/lds.npz",
        expected="train.zarr (labels): damaged or not written by diffattr",
        finished=["results/bad/subsets/lds.npz"],
    )
