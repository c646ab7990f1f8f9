"""Validate a workflow config against the JSON schema, fill in defaults, and check cross-references."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from diffattr.errors import InputError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path = SCHEMA) -> dict:
    """Read the YAML schema."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def _fill_defaults(node: Any, schema: dict) -> Any:
    """Recursively insert the schema's defaults for missing object keys."""
    if schema.get("type") == "object" and isinstance(node, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            if key in node:
                node[key] = _fill_defaults(node[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in node:
                if key not in schema.get("properties", {}):
                    node[key] = _fill_defaults(node[key], extra)
    return node


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"unknown key(s) {unknown}; allowed: {allowed}"
    return error.message.replace("\n", " ")


def validate(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of `config` with defaults filled; raise InputError on the first problem."""
    schema = schema or load_schema()
    filled = _fill_defaults(copy.deepcopy(dict(config)), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise InputError(f"config key '{_key_path(best)}': {_message(best)}")
    _check_references(filled)
    return filled


def _check_references(config: dict) -> None:
    """Cross-key checks a JSON schema cannot express."""
    for name, method in config["methods"].items():
        featurizer = method.get("featurizer")
        if method["kind"] in ("trak",) and featurizer not in config["featurizers"]:
            raise InputError(
                f"config key 'methods.{name}.featurizer': '{featurizer}' is not defined under "
                f"'featurizers' (defined: {sorted(config['featurizers'])})"
            )
    model = config["model"]
    if len(model["down_block_types"]) != len(model["block_out_channels"]):
        raise InputError(
            "config key 'model.down_block_types': needs one entry per 'model.block_out_channels'"
        )
    if len(model["up_block_types"]) != len(model["block_out_channels"]):
        raise InputError("config key 'model.up_block_types': needs one entry per 'model.block_out_channels'")
    if config["data"]["source"] == "cifar10" and len(config["data"]["classes"]) < 2:
        raise InputError("config key 'data.classes': give at least two classes")
