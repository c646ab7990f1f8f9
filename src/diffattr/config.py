"""Validate a workflow config against the JSON schema, fill in defaults, and check cross-references."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from diffattr.errors import InputError
from diffattr.paths import SAFE_NAME, SAFE_NAME_RULE, check_path_names
from diffattr.pretrained import own_folder
from diffattr.registry import METHOD_KINDS, method_kind

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path = SCHEMA) -> dict:
    """Read the YAML schema."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def _deref(schema: dict, root: dict) -> dict:
    """The schema a local `$ref` points to (or `schema` itself)."""
    if "$ref" not in schema:
        return schema
    target = root
    for part in schema["$ref"].lstrip("#/").split("/"):
        target = target[part]
    return target


def _coerce(node: Any, schema: dict, root: dict) -> Any:
    """Read strings as YAML where the schema expects no string, and integer-valued floats as integers.

    `--config 'lds={alpha: 0.3}'` reaches the config as the string '0.3', and `num_subsets: 32.0` is a
    valid JSON-schema integer that range() and file names would reject later.
    """
    schema = _deref(schema, root)
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(node, str) and types and "string" not in types:
        try:
            parsed = yaml.safe_load(node)
        except yaml.YAMLError:
            parsed = node
        node = node if isinstance(parsed, str) else parsed
    if isinstance(node, float) and node.is_integer() and "integer" in types and "number" not in types:
        node = int(node)
    if isinstance(node, dict):
        extra = schema.get("additionalProperties")
        for key in node:
            sub = schema.get("properties", {}).get(key, extra)
            if isinstance(sub, dict):
                node[key] = _coerce(node[key], sub, root)
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        node[:] = [_coerce(item, schema["items"], root) for item in node]
    return node


def _fill_defaults(node: Any, schema: dict, root: dict | None = None) -> Any:
    """Recursively insert the schema's defaults for missing object keys (following local $refs)."""
    root = root or schema
    schema = _deref(schema, root)
    if schema.get("type") == "object" and isinstance(node, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            if key in node:
                node[key] = _fill_defaults(node[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in node:
                if key not in schema.get("properties", {}):
                    node[key] = _fill_defaults(node[key], extra, root)
    return node


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"unknown key(s) {unknown}; allowed: {allowed}"
    if error.validator == "pattern" and error.schema.get("pattern") == SAFE_NAME.pattern:
        return f"{error.instance!r} is not a safe file name; {SAFE_NAME_RULE}"
    return error.message.replace("\n", " ")


def validate(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of `config` with defaults filled; raise InputError on the first problem."""
    schema = schema or load_schema()
    filled = _fill_defaults(_coerce(copy.deepcopy(dict(config)), schema, schema), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise InputError(f"config key '{_key_path(best)}': {_message(best)}")
    filled["results"] = os.path.expanduser(filled["results"])  # a shell would; YAML and --config do not
    check_path_names(filled)
    _check_references(filled)
    _check_local_methods(filled)
    return filled


def _check_local_methods(config: dict) -> None:
    """Each method's featurizer normalises timesteps as its kind needs; the checkpoints it needs exist (a
    user's own trained model, model.pretrained, has none)."""
    for name, method in config["methods"].items():
        kind = method_kind(method["kind"])
        featurizer = config["featurizers"].get(method.get("featurizer"), {})
        wanted = kind.normalize_timesteps
        if wanted is not None and featurizer["normalize_timesteps"] != wanted:
            raise InputError(
                f"config key 'featurizers.{method['featurizer']}.normalize_timesteps': method '{name}' "
                f"(kind {method['kind']}) needs it {str(wanted).lower()}"
            )
        if kind.checkpoints and own_folder(config["model"]):
            raise InputError(
                f"config key 'methods.{name}': kind {method['kind']} reads the full model's training "
                f"checkpoints, which a trained model of model.pretrained ({config['model']['pretrained']}) "
                "does not have"
            )
        if kind.checkpoints and config["train"]["checkpoints"] < 1:
            raise InputError(
                f"config key 'train.checkpoints': method '{name}' (kind {method['kind']}) needs at least 1"
            )


def _check_references(config: dict) -> None:
    """Cross-key checks a JSON schema cannot express."""
    datamodel = config["datamodel"]
    if datamodel["penalty"] == "cv" and datamodel["cv_folds"] > datamodel["num_subsets"]:
        raise InputError(
            f"config key 'datamodel.cv_folds': {datamodel['cv_folds']} folds need at least as many "
            f"retrains, datamodel.num_subsets is {datamodel['num_subsets']}"
        )
    for name, method in config["methods"].items():
        featurizer = method.get("featurizer")
        if method_kind(method["kind"]).featurizer and featurizer not in config["featurizers"]:
            raise InputError(
                f"config key 'methods.{name}.featurizer': '{featurizer}' is not defined under "
                f"'featurizers' (defined: {sorted(config['featurizers'])})"
            )
    for prefix, section in (("", config), ("shapley.", config["shapley"])):
        model = section.get("model")
        if model is None:
            continue
        for key in ("down_block_types", "up_block_types"):
            if len(model[key]) != len(model["block_out_channels"]):
                raise InputError(
                    f"config key '{prefix}model.{key}': needs one entry per "
                    f"'{prefix}model.block_out_channels'"
                )
    for prefix, data in (("", config["data"]), ("shapley.", config["shapley"].get("data"))):
        if data and data["source"] in ("cifar10", "cifar100") and len(data["classes"]) < 2:
            raise InputError(f"config key '{prefix}data.classes': give at least two classes")
    _check_counterfactual(config)
    retrains_subsets = any(method_kind(m["kind"]).retrains for m in config["methods"].values())
    for name, method in config["methods"].items():
        kind = method_kind(method["kind"])
        ensemble = method.get("ensemble", {"members": 1})
        if ensemble["members"] > 1 and not kind.ensemble:
            raise InputError(
                f"config key 'methods.{name}.ensemble': kind {method['kind']} does not average over models "
                f"(kinds that do: {[k for k, r in METHOD_KINDS.items() if r.ensemble]})"
            )
        if ensemble["members"] > 1 and ensemble["over"] == "subsets":
            retrains_subsets = True
            if ensemble["members"] > config["datamodel"]["num_subsets"]:
                raise InputError(
                    f"config key 'methods.{name}.ensemble.members': {ensemble['members']} subset models "
                    f"need datamodel.num_subsets >= {ensemble['members']} (their subsets)"
                )
        if method.get("checkpoint_weights", "lr_sum") != "lr_sum" and not kind.checkpoints:
            raise InputError(
                f"config key 'methods.{name}.checkpoint_weights': only the tracin / retrac kinds "
                "weight checkpoints"
            )
    if retrains_subsets and config["datamodel"]["seed"] == config["lds"]["seed"]:
        raise InputError("config key 'datamodel.seed': must differ from lds.seed (never the LDS subsets)")
    if not config["lds"]["enabled"] and not config["shapley"]["enabled"]:
        raise InputError("config keys 'lds.enabled' and 'shapley.enabled': both false, nothing to run")


def _check_counterfactual(config: dict) -> None:
    """The counterfactual's methods exist, leave room for its random baseline, and its sizes fit the data."""
    cf = config["counterfactual"]
    if not (cf["enabled"] and config["lds"]["enabled"]):
        return
    if config["model"].get("family", "pixel") != "pixel":
        raise InputError(
            "config key 'counterfactual.enabled': the counterfactual retrains pixel-space models only "
            f"(model.family is {config['model']['family']!r})"
        )
    if "random" in config["methods"]:
        raise InputError(
            "config key 'methods.random': the name is reserved for the counterfactual's random baseline"
        )
    for name in cf["methods"] or []:
        if name not in config["methods"]:
            raise InputError(
                f"config key 'counterfactual.methods': '{name}' is not defined under 'methods' "
                f"(defined: {sorted(config['methods'])})"
            )
    if cf["remove"] >= config["data"]["n_train"]:
        raise InputError(
            f"config key 'counterfactual.remove': {cf['remove']} is not below data.n_train "
            f"({config['data']['n_train']})"
        )
    n_gen = config["generate"]["num_images"]
    reported = n_gen - int(round(config["lds"]["heldout_fraction"] * n_gen))
    if cf["num_targets"] > reported:
        raise InputError(
            f"config key 'counterfactual.num_targets': {cf['num_targets']} is more than the {reported} "
            "generated targets not held out for tuning"
        )
