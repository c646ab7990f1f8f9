"""Atomic writes and array stores: every output appears under its final name only when complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from diffattr.errors import InputError


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write to; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    _remove(path)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_arrays(
    path: str | Path,
    arrays: dict[str, np.ndarray],
    attrs: dict | None = None,
    chunk_rows: int | None = None,
) -> None:
    """Write named arrays (and JSON attributes) to a zarr group atomically, chunked by row."""
    with atomic_path(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        for name, value in arrays.items():
            value = np.asarray(value)
            chunks = value.shape
            if chunk_rows and value.ndim >= 1 and value.shape[0] > 0:
                chunks = (min(chunk_rows, value.shape[0]),) + value.shape[1:]
            arr = group.create_array(name, shape=value.shape, dtype=value.dtype, chunks=chunks)
            arr[...] = value
        group.attrs.update(_jsonable(attrs or {}))


def read_arrays(path: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read named arrays (all if `names` is None) from a zarr group; a damaged store is an InputError."""
    group = open_group(path)
    names = names if names is not None else sorted(group.array_keys())
    arrays = {}
    for name in names:
        with _damaged(path, name):
            if name not in group:
                raise InputError(f"{path}: no array {name!r} (has {sorted(group.array_keys())})")
            arrays[name] = group[name][...]
    return arrays


def read_attrs(path: str | Path) -> dict:
    """The JSON attributes of a zarr group."""
    return dict(open_group(path).attrs)


def open_group(path: str | Path) -> zarr.Group:
    """Open a zarr group read-only, with a clear error if it is missing or damaged."""
    if not Path(path).exists():
        raise InputError(f"missing array store: {path}")
    with _damaged(path):
        return zarr.open_group(str(path), mode="r")


@contextlib.contextmanager
def _damaged(path: str | Path, part: str = "") -> Iterator[None]:
    """Turn any failure to read a stored file (truncated, corrupt, not ours) into a one-line InputError."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:  # zarr, numcodecs, zipfile and numpy raise many kinds for damaged files
        detail = " ".join(str(exc).split())[:200]
        where = f"{path} ({part})" if part else str(path)
        raise InputError(
            f"{where}: damaged or not written by diffattr ({type(exc).__name__}: {detail}); "
            "delete it and rerun to rebuild"
        ) from exc


def write_npz(path: str | Path, **arrays: Any) -> None:
    """np.savez atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


class StoredArrays(dict):
    """Arrays read from one file; asking for one it lacks is an InputError naming the file."""

    def __init__(self, path: str | Path, arrays: dict[str, np.ndarray]):
        super().__init__(arrays)
        self.path = path

    def __missing__(self, key: str) -> np.ndarray:
        raise InputError(f"{self.path}: no array {key!r} in this file (has {sorted(self)})")


def read_npz(path: str | Path) -> StoredArrays:
    """Load every array of an .npz file; a truncated or foreign file is an InputError naming it."""
    if not Path(path).exists():
        raise InputError(f"missing file: {path}")
    with _damaged(path), np.load(path, allow_pickle=False) as data:
        return StoredArrays(path, {k: data[k] for k in data.files})


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def write_csv(path: str | Path, frame) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_table(path: str | Path, columns: list[str]):
    """A CSV as a pandas DataFrame that must have `columns`; a missing file, column or parse error is an
    InputError naming the file."""
    import pandas as pd

    if not Path(path).is_file():
        raise InputError(f"missing file: {path}")
    with _damaged(path):
        frame = pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: no column(s) {missing} (has {list(frame.columns)})")
    return frame
