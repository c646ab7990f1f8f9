"""The registries and the schema name the same things, and only the method registry knows a kind's needs."""

import re
from pathlib import Path

import pytest

from diffattr.config import load_schema, validate
from diffattr.errors import InputError
from diffattr.families import FAMILIES
from diffattr.outputs import OUTPUT_FUNCTIONS
from diffattr.registry import ESTIMATORS, METHOD_KINDS, PROPERTIES, method_kind, score_function

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema()["properties"]
SHAPLEY = SCHEMA["shapley"]["properties"]


@pytest.mark.parametrize(
    ("enum", "registry"),
    [
        (SCHEMA["methods"]["additionalProperties"]["properties"]["kind"]["enum"], METHOD_KINDS),
        (SHAPLEY["property"]["properties"]["name"]["enum"], PROPERTIES),
        (SHAPLEY["estimator"]["enum"], ESTIMATORS),
        (SCHEMA["featurizers"]["additionalProperties"]["properties"]["output"]["enum"], OUTPUT_FUNCTIONS),
        (SCHEMA["model"]["properties"]["family"]["enum"], FAMILIES),
    ],
    ids=["method kinds", "properties", "estimators", "output functions", "families"],
)
def test_each_schema_enum_equals_its_registry(enum, registry):
    assert enum == list(registry)


def test_each_kind_names_a_rule_and_a_scoring_function_that_exist():
    rules = set(
        re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk")), re.M)
    )
    for name, kind in METHOD_KINDS.items():
        assert kind.rule in rules, name
        assert callable(score_function(name)), name
        assert set(kind.splits) <= {"val", "gen"}, name
        assert not kind.features or kind.featurizer, f"{name}: reads gradient shards without a featurizer"


def test_an_unknown_kind_is_named_with_the_known_ones():
    with pytest.raises(InputError, match="unknown method kind 'nope'.*'trak'"):
        method_kind("nope")


# A line that speaks of a kind and names one: where code would branch on a kind's name.
KIND_NAME = re.compile(r"""\bkind\b.*["'](""" + "|".join(METHOD_KINDS) + """)["']""")


def test_no_rule_script_or_module_branches_on_a_kind_name():
    files = [*ROOT.glob("rules/*.smk"), *ROOT.glob("scripts/*.py"), *ROOT.glob("src/diffattr/**/*.py")]
    branching = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if path.name != "registry.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if KIND_NAME.search(line)
    ]
    assert not branching


@pytest.mark.parametrize("kind", [k for k, r in METHOD_KINDS.items() if r.normalize_timesteps is not None])
def test_a_kind_that_needs_timestep_normalisation_one_way_rejects_the_other(kind):
    wanted = METHOD_KINDS[kind].normalize_timesteps
    config = {
        "featurizers": {"f": {"output": "mean", "normalize_timesteps": not wanted}},
        "methods": {"M": {"kind": kind, "featurizer": "f"}},
        "train": {"checkpoints": 2},
    }
    with pytest.raises(
        InputError, match=rf"featurizers\.f\.normalize_timesteps'.*needs it {str(wanted).lower()}"
    ):
        validate(config)
