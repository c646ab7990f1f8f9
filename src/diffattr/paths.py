"""Names that become file or folder names, and the results root: no config value may write outside it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from diffattr.errors import InputError

SAFE_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.+-]*$")
SAFE_NAME_RULE = "use letters, digits and _ . + - only, starting with a letter or digit, no '..'"
# Config sections whose entry names become folder names (scores/{method}/, grads/{featurizer}/, ...).
NAMED_SECTIONS = ("methods", "featurizers")


def check_name(key: str, name: object) -> None:
    """Raise InputError unless `name` is safe as one path component (no '/', no '..', no leading dot)."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise InputError(f"config key '{key}': {name!r} is not a safe file name; {SAFE_NAME_RULE}")


def path_names(config: dict) -> Iterator[tuple[str, str]]:
    """(key, name) of every config value that becomes a file or folder name."""
    yield "experiment", config.get("experiment")
    for section in NAMED_SECTIONS:
        for name in config.get(section) or {}:
            yield section, name


def check_path_names(config: dict) -> None:
    """Every name that becomes a path is a safe single path component."""
    for key, name in path_names(config):
        check_name(key, name)


def check_results_root(results: str, workdir: str | Path, repo_root: str | Path) -> Path:
    """The resolved results folder; refuse '', '/', the repository root and any folder above it."""
    if not isinstance(results, str) or not results.strip():
        raise InputError("config key 'results': empty; give a folder such as 'results'")
    root = (Path(workdir) / results).resolve()
    repo = Path(repo_root).resolve()
    if root == Path(root.anchor):
        raise InputError(
            f"config key 'results': {results!r} is the filesystem root; give a folder such as 'results'"
        )
    if root == repo or root in repo.parents:
        raise InputError(
            f"config key 'results': {results!r} resolves to {root}, which contains the repository; "
            "outputs would mix with the code; give a folder such as 'results'"
        )
    return root
