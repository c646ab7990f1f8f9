"""The schema fills defaults and turns every wrong key, type or value into one line naming it."""

import pytest
import yaml

from diffattr.config import validate
from diffattr.errors import InputError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def default_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_embedded_default_and_presets_validate_with_defaults_filled():
    config = validate(default_config())
    assert config["lds"]["alpha"] == 0.5 and config["featurizers"]["trak"]["projection"] == "gaussian"
    for preset in sorted((ROOT / "experiments").glob("*.yaml")):
        merged = {**default_config(), **yaml.safe_load(preset.read_text())}
        validate(merged)


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
    ],
)
def test_bad_config_gives_one_line_naming_the_key(change, expected):
    config = default_config()
    change(config)
    with pytest.raises(InputError) as err:
        validate(config)
    assert str(err.value).startswith(expected), str(err.value)
    assert "\n" not in str(err.value)
