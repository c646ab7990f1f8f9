"""The schema fills defaults and turns every wrong key, type or value into one line naming it."""

import pytest
import yaml

from diffattr.config import validate
from diffattr.errors import InputError
from diffattr.preflight import replace_sections
from tests.workflow_helpers import ROOT, layered_config


def default_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_embedded_default_and_presets_validate_with_defaults_filled():
    config = validate(default_config())
    assert config["lds"]["alpha"] == 0.5 and config["featurizers"]["trak"]["projection"] == "gaussian"
    assert config["shapley"]["data"]["classes"] == list(range(10))
    assert "model" not in config["shapley"]  # absent: the branch uses the top-level model
    for preset in sorted((ROOT / "experiments").glob("*.yaml")):
        validate(layered_config(preset))


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c["lds"].update(alpha=1.5), "config key 'lds.alpha': 1.5 is greater than"),
        (
            lambda c: c["lds"].update(num_subset=3),
            "config key 'lds': unknown key(s) ['num_subset']",
        ),
        (
            lambda c: c["train"].update(steps="many"),
            "config key 'train.steps': 'many' is not of type",
        ),
        (lambda c: c.update(device="tpu"), "config key 'device': 'tpu' is not one of"),
        (
            lambda c: c["featurizers"]["trak"].update(output="hinge"),
            "config key 'featurizers.trak.output'",
        ),
        (
            lambda c: c["methods"].update(X={"kind": "trak", "featurizer": "nope"}),
            "config key 'methods.X.featurizer': 'nope' is not defined",
        ),
        (
            lambda c: c["model"].update(up_block_types=["UpBlock2D"]),
            "config key 'model.up_block_types'",
        ),
        (lambda c: c["shapley"].update(how=["retrain", "magic"]), "config key 'shapley.how.1': 'magic'"),
        (lambda c: c["shapley"]["pruning"].update(ratio=1.0), "config key 'shapley.pruning.ratio'"),
        (lambda c: c["shapley"]["data"].update(n_trian=3), "config key 'shapley.data': unknown key(s)"),
        (
            lambda c: c["shapley"].update(model={"block_out_channels": [8, 16, 32]}),
            "config key 'shapley.model.down_block_types': needs one entry",
        ),
        (
            lambda c: (c["shapley"].update(enabled=False), c["lds"].update(enabled=False)),
            "config keys 'lds.enabled' and 'shapley.enabled': both false",
        ),
    ],
)
def test_bad_config_gives_one_line_naming_the_key(change, expected):
    config = default_config()
    change(config)
    with pytest.raises(InputError) as err:
        validate(config)
    assert str(err.value).startswith(expected), str(err.value)
    assert "\n" not in str(err.value)


def test_replace_sections_drops_the_defaults_methods_and_later_files_still_merge(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text(
        "replace_sections: [methods]\nmethods:\n  only: {kind: pixel}\n"
        "featurizers:\n  extra: {output: loss, timesteps: 10, dim: 64}\n"
        "counterfactual: {methods: [only]}\n"
    )
    later = tmp_path / "later.yaml"
    later.write_text("methods:\n  added: {kind: trak, featurizer: trak}\n")
    replaced = replace_sections([preset, later], {"methods": {"only": {"kind": "pixel"}}})
    assert replaced == {
        "methods": {"only": {"kind": "pixel"}, "added": {"kind": "trak", "featurizer": "trak"}}
    }
    config = validate(layered_config(preset))
    assert list(config["methods"]) == ["only"]  # the demo's methods are gone
    assert {"trak", "dtrak", "extra"} <= set(config["featurizers"])  # not replaced: merged


def test_replace_sections_names_a_section_the_file_does_not_have(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("replace_sections: [featurizers]\nmethods:\n  only: {kind: pixel}\n")
    with pytest.raises(InputError, match=r"'replace_sections' in .*preset.yaml: 'featurizers' is not"):
        replace_sections([preset])
