"""The config files a user passes: read with errors that name file and line, overlays that cannot silently
change nothing, and sections a file replaces instead of merging (Snakemake merges key by key)."""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

from diffattr.errors import InputError

DRY_RUN_NOTICE = "diffattr: dry run: input files and the GPU are not checked (they are before a real run)"
OVERLAY_ADVICE = (
    "Snakemake merges config files key by key over config.yaml, so an empty section keeps every default. "
    "To replace methods or featurizers, list them under replace_sections in your file with the entries "
    "you want; to replace anything else, write the complete config in one file and run with "
    "--replace-workflow-config (config.yaml is then not read; the schema fills unset keys)"
)


def check_overlays(files: Iterable[str | Path], cli_config: dict | None = None) -> None:
    """Refuse empty sections (`methods: {}`) in command-line config files or --config: merging drops them."""
    sources = [(f"in {file}", load_yaml_file(file)) for file in files]
    sources.append(("in --config", cli_config or {}))
    for where, data in sources:
        key = _empty_mapping(data)
        if key:
            raise InputError(f"config key '{key}' {where}: empty, so it changes nothing. {OVERLAY_ADVICE}")


def replace_sections(files: Iterable[str | Path], cli_config: dict | None = None) -> dict:
    """Sections a config file lists under `replace_sections` take that file's content instead of merging.

    Snakemake merges config files key by key over config.yaml, so a preset could never drop the demo's
    methods or featurizers. From the last file that replaces a section, later files and --config merge
    over it as usual. Returns the replaced sections only.
    """
    loaded = [(str(file), load_yaml_file(file)) for file in files]
    replaced: dict = {}
    for position, (file, data) in enumerate(loaded):
        sections = data.get("replace_sections", [])
        if not isinstance(sections, list):
            raise InputError(f"config key 'replace_sections' in {file}: a list of section names")
        for section in sections:
            if not isinstance(data.get(section), dict) or not data[section]:
                raise InputError(
                    f"config key 'replace_sections' in {file}: '{section}' is not a non-empty section "
                    "of this file"
                )
            replaced[section] = copy.deepcopy(data[section])
            for extra in [d for _, d in loaded[position + 1 :]] + [cli_config or {}]:
                if isinstance(extra.get(section), dict):
                    _merge(replaced[section], extra[section])
    return replaced


def workspace_config(workdir: str | Path, files: Iterable[str | Path] = ()) -> dict:
    """The config a Snakemake run in `workdir` with these --configfile files reads, not yet validated:
    the workspace's config.yaml, each file merged over it, then their replaced sections."""
    files = list(files)
    config = load_yaml_file(Path(workdir) / "config.yaml")
    for file in files:
        _merge(config, load_yaml_file(file))
    return {**config, **replace_sections(files)}


def _merge(base: dict, extra: dict) -> None:
    """Merge `extra` into `base` key by key, as Snakemake merges config files."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _empty_mapping(node: object, prefix: str = "") -> str | None:
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and not value:
            return path
        found = _empty_mapping(value, f"{path}.")
        if found:
            return found
    return None


def load_yaml_file(path: str | Path) -> dict:
    """A config file as a dict; a syntax error names the file and line, in one line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{where}: YAML syntax error: {problem}") from exc
    if data is None:
        raise InputError(f"{path}: empty; a config file must be a mapping of keys (Snakemake refuses it too)")
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config file must be a mapping of keys, not {type(data).__name__}")
    return data


def is_dry_run(argv: list[str]) -> bool:
    """Whether the Snakemake command line asks for a dry run (-n, --dry-run, --dryrun, -np)."""
    return any(arg in ("--dry-run", "--dryrun") or re.fullmatch(r"-[a-zA-Z]*n[a-zA-Z]*", arg) for arg in argv)


def main(argv: list[str]) -> int:
    """`python -m diffattr.preflight FILE...`: locate YAML errors and empty sections in config files.

    Snakemake reports a broken --configfile without its name or line; this names both.
    """
    try:
        check_overlays(argv)
    except InputError as err:
        print(f"diffattr: {err}", file=sys.stderr)
        return 1
    print(f"diffattr: {len(argv)} config file(s) read without error")
    return 0
