"""Datasets as uint8 image arrays: scikit-learn digits (shipped with it), CIFAR-10 / CIFAR-100 from their
local tarballs, and a folder of images listed in a CSV of metadata (identities, artists)."""

from __future__ import annotations

import logging
import pickle
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from diffattr.errors import InputError
from diffattr.store import read_arrays, read_attrs, write_arrays

if TYPE_CHECKING:
    import pandas as pd

CIFAR10_MEMBER = "cifar-10-batches-py"
CIFAR100_MEMBER = "cifar-100-python"
# Cells that pandas would read as a missing value: in a file, label or contributor column they name nothing.
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "<na>", "#n/a", "-nan", "-1.#ind", "1.#ind"})
log = logging.getLogger("diffattr")


@dataclass
class ImageSet:
    """Images (N, C, H, W) uint8 with labels, contributor ids, their index in the source dataset and,
    for text-conditioned models, a caption each."""

    images: np.ndarray
    labels: np.ndarray
    contributors: np.ndarray
    source_index: np.ndarray
    metadata: dict[str, np.ndarray] = field(default_factory=dict)
    captions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def tensor(self) -> torch.Tensor:
        """Images as float32 in [-1, 1], the diffusion model's data space."""
        return model_space(self.images)


def model_space(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, C, H, W) as float32 in [-1, 1], the diffusion model's data space."""
    return torch.from_numpy(images).float().div(127.5).sub(1.0)


def per_class_counts(n: int, n_classes: int) -> list[int]:
    """Split n as evenly as possible across classes (the first classes take the remainder)."""
    return [n // n_classes + (1 if c < n % n_classes else 0) for c in range(n_classes)]


def stratified_pick(
    labels: np.ndarray,
    classes: list[int],
    counts: list[int],
    rng: np.random.Generator,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Indices with `counts[c]` random items of each class, sorted; `exclude` marks unavailable ones."""
    chosen = []
    for cls, count in zip(classes, counts, strict=True):
        pool = np.flatnonzero((labels == cls) & ~(exclude if exclude is not None else False))
        if len(pool) < count:
            raise InputError(
                f"config key 'data': class {cls} has {len(pool)} images available, {count} requested"
            )
        chosen.append(rng.choice(pool, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


def load_digits_splits(classes: list[int], n_train: int, n_val: int, seed: int) -> dict[str, ImageSet]:
    """scikit-learn's 8x8 handwritten digits, restricted to `classes`, split stratified into train/val."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train = stratified_pick(labels, classes, per_class_counts(n_train, len(classes)), rng)
    taken = np.zeros(len(labels), bool)
    taken[train] = True
    val = stratified_pick(labels, classes, per_class_counts(n_val, len(classes)), rng, taken)
    return {split: _subset(images, labels, idx) for split, idx in (("train", train), ("val", val))}


def load_cifar10_splits(
    path: str | Path, classes: list[int], n_train: int, n_val: int, seed: int, section: str = "data"
) -> dict[str, ImageSet]:
    """CIFAR-10 from the standard `cifar-10-python.tar.gz`: train from its train split, val from its test one.

    With classes [1, 7], n_train 5000, n_val 1000, seed 42 this is D-TRAK's CIFAR-2.
    """
    args = (path, f"{section}.cifar10_path", "cifar-10-python.tar.gz", CIFAR10_MEMBER, b"labels")
    train = _read_cifar(*args, [f"data_batch_{i}" for i in range(1, 6)])
    return _stratified_splits(train, _read_cifar(*args, ["test_batch"]), classes, n_train, n_val, seed)


def load_cifar100_splits(
    path: str | Path, classes: list[int], n_train: int, n_val: int, seed: int, section: str = "data"
) -> dict[str, ImageSet]:
    """CIFAR-100 (fine labels) from its tarball; classes 40-44, 55-59, 60-64, 80-84 = CIFAR-20."""
    args = (path, f"{section}.cifar100_path", "cifar-100-python.tar.gz", CIFAR100_MEMBER, b"fine_labels")
    return _stratified_splits(
        _read_cifar(*args, ["train"]), _read_cifar(*args, ["test"]), classes, n_train, n_val, seed
    )


def _stratified_splits(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    classes: list[int],
    n_train: int,
    n_val: int,
    seed: int,
) -> dict[str, ImageSet]:
    """Train from a dataset's train split and val from its test split, stratified over `classes`."""
    rng = np.random.default_rng(seed)
    train_idx = stratified_pick(train[1], classes, per_class_counts(n_train, len(classes)), rng)
    val_idx = stratified_pick(test[1], classes, per_class_counts(n_val, len(classes)), rng)
    return {"train": _subset(*train, train_idx), "val": _subset(*test, val_idx)}


def _read_cifar(
    path: str | Path, key: str, name: str, folder: str, label_key: bytes, members: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"config key '{key}': file not found: {path} (download {name} once and point this key at it)"
        )
    images, labels = [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in members:
                handle = tar.extractfile(f"{folder}/{member}")
                batch = pickle.load(handle, encoding="bytes")
                images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(batch[label_key], np.int64))
    except (EOFError, zlib.error, tarfile.ReadError, pickle.UnpicklingError) as exc:
        raise InputError(
            f"{path}: truncated or damaged ({exc}); an interrupted download? Download {name} again"
        ) from exc
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise InputError(f"{path}: not a valid {name} ({exc})") from exc
    return np.concatenate(images), np.concatenate(labels)


def read_metadata(csv: Path, folder_config: dict, section: str = "data") -> pd.DataFrame:
    """An image folder's CSV as strings, checked: its file (and label) column exist and name something in
    every row, and no file is listed twice (it could land in both train and val).

    A UTF-8 byte-order mark is dropped, and a header without commas but with `;` or tabs sets the separator
    (spreadsheet exports); `section` is the config section named in messages (data or shapley.data).
    """
    import pandas as pd

    key = f"{section}.image_folder"
    if not csv.is_file():
        raise InputError(f"config key '{key}.metadata': file not found: {csv}")
    try:
        with open(csv, encoding="utf-8-sig") as fh:
            header = fh.readline()
        sep = next((s for s in (";", "\t") if "," not in header and s in header), ",")
        table = pd.read_csv(csv, dtype=str, keep_default_na=False, encoding="utf-8-sig", sep=sep)
    except (ValueError, OSError) as exc:
        raise InputError(f"{csv}: not a readable CSV ({str(exc).splitlines()[0]})") from exc
    if sep != ",":
        log.info("%s: read as %r-separated (no comma in its header)", csv, sep)
    file_column, label_column = folder_config["file_column"], folder_config.get("label_column")
    for name, column in (("file_column", file_column), ("label_column", label_column)):
        if column is not None and column not in table.columns:
            raise InputError(
                f"config key '{key}.{name}': no column {column!r} in {csv} (has {list(table.columns)})"
            )
        if column is not None:
            missing_cell(table, column, csv)
    repeated = table[file_column].duplicated(keep="first").to_numpy()
    if repeated.any():
        row = int(repeated.argmax())
        name = table[file_column].iloc[row]
        first = int((table[file_column] == name).to_numpy().argmax())
        raise InputError(
            f"{csv}: {name!r} is listed twice (lines {first + 2} and {row + 2}), {int(repeated.sum())} "
            "repeated row(s) in all; list each image once (a repeat could be both a training image and a "
            "validation target)"
        )
    return table


def missing_cell(table: pd.DataFrame, column: str, csv: Path) -> None:
    """Refuse an empty or NaN-like cell in `column` (an image, label or contributor that names nothing)."""
    blank = table[column].str.strip().str.lower().isin(MISSING).to_numpy()
    if blank.any():
        row = int(blank.argmax())
        value = table[column].iloc[row]
        shown = f", {value!r}" if value.strip() else ""
        raise InputError(
            f"{csv}: empty cell in column {column!r} (line {row + 2}){shown}; "
            f"{int(blank.sum())} such row(s), fill or remove them"
        )


def load_image_folder_splits(
    folder_config: dict, n_train: int, n_val: int, seed: int, section: str = "data"
) -> dict[str, ImageSet]:
    """Images listed in a CSV (a `file` column relative to the folder, plus metadata columns such as an
    identity or artist), resized to `image_size` RGB, split at random into train and val.

    Every CSV column is kept as metadata (contributors can be defined by one); `label_column`, if set,
    gives the labels. Images of another mode or size are converted and resized on purpose, with one log
    line each saying how many.
    """
    from PIL import Image

    root, csv = Path(folder_config["path"]), Path(folder_config["metadata"])
    table = read_metadata(csv, folder_config, section)
    file_column, label_column = folder_config["file_column"], folder_config.get("label_column")
    if n_train + n_val > len(table):
        raise InputError(
            f"config key '{section}.n_train': {n_train} + {n_val} images requested, {csv} lists {len(table)}"
        )
    size = folder_config["image_size"]
    template = folder_config.get("caption")
    captions = fill_captions(template, table, section) if template else None
    order = np.random.default_rng(seed).permutation(len(table))
    labels = (
        np.unique(table[label_column].to_numpy(), return_inverse=True)[1]
        if label_column
        else np.zeros(len(table), np.int64)
    )
    modes: Counter[str] = Counter()
    sizes: Counter[tuple[int, int]] = Counter()
    splits = {}
    for split, idx in (
        ("train", np.sort(order[:n_train])),
        ("val", np.sort(order[n_train : n_train + n_val])),
    ):
        images = []
        for name in table[file_column].to_numpy()[idx]:
            try:
                with Image.open(root / name) as img:
                    if img.mode in ("I", "F") or img.mode.startswith("I;"):
                        raise InputError(
                            f"{root / name}: {img.mode} image (16-bit, 32-bit or float pixels); "
                            "the image folder takes 8-bit images only, convert it first"
                        )
                    modes[img.mode] += img.mode != "RGB"
                    sizes[img.size] += img.size != (size, size)
                    images.append(np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC)))
            except (OSError, ValueError) as exc:
                raise InputError(f"{root / name}: cannot read image ({exc})") from exc
        splits[split] = ImageSet(
            images=np.stack(images).transpose(0, 3, 1, 2).copy(),
            labels=labels[idx].astype(np.int64),
            contributors=labels[idx].astype(np.int64),
            source_index=idx.astype(np.int64),
            metadata={c: table[c].to_numpy()[idx] for c in table.columns},
            captions=captions[idx] if captions is not None else None,
        )
    _log_conversions(modes, sizes, size)
    return splits


def _log_conversions(modes: Counter[str], sizes: Counter[tuple[int, int]], size: int) -> None:
    """One line for the images converted to RGB (by mode) and one for those resized (by size), if any."""
    notes = {"RGBA": " (alpha dropped)", "LA": " (alpha dropped)", "L": " (grayscale)", "1": " (bilevel)"}
    converted = [f"{n} {mode}{notes.get(mode, '')}" for mode, n in sorted(modes.items()) if n]
    if converted:
        log.info("converted to RGB: %s image(s)", ", ".join(converted))
    resized = [f"{n} of {w}x{h}" for (w, h), n in sorted(sizes.items()) if n]
    if resized:
        log.info("resized to %dx%d: %s image(s)", size, size, ", ".join(resized))


def fill_captions(template: str, table: pd.DataFrame, section: str = "data") -> np.ndarray:
    """One caption per CSV row from a template over its columns, e.g. "a {style} painting by {artist}"."""
    try:
        return np.array([template.format(**row) for row in table.to_dict("records")], dtype=object)
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(
            f"config key '{section}.image_folder.caption': {template!r} does not fit the columns "
            f"{list(table.columns)} ({exc!r})"
        ) from exc


def _subset(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> ImageSet:
    return ImageSet(
        images=np.ascontiguousarray(images[idx]),
        labels=labels[idx],
        contributors=labels[idx].copy(),
        source_index=idx.astype(np.int64),
    )


def load_splits(data_config: dict, section: str = "data") -> dict[str, ImageSet]:
    """Build the train and val splits named by a data section of the config (`section`, for messages)."""
    args = (
        data_config["classes"],
        data_config["n_train"],
        data_config["n_val"],
        data_config["seed"],
    )
    if data_config["source"] == "digits":
        return load_digits_splits(*args)
    if data_config["source"] == "cifar10":
        return load_cifar10_splits(data_config["cifar10_path"], *args, section)
    if data_config["source"] == "cifar100":
        return load_cifar100_splits(data_config["cifar100_path"], *args, section)
    if data_config["source"] == "image_folder":
        if not data_config.get("image_folder"):
            raise InputError(f"config key '{section}.image_folder': required for source image_folder")
        return load_image_folder_splits(data_config["image_folder"], *args[1:], section)
    raise InputError(f"config key '{section}.source': unknown source {data_config['source']!r}")


def write_imageset(path: str | Path, data: ImageSet, attrs: dict | None = None) -> None:
    """Store an ImageSet as a zarr group, chunked by sample (captions, if any, as an attribute)."""
    if data.captions is not None:
        attrs = {**(attrs or {}), "captions": [str(c) for c in data.captions]}
    write_arrays(
        path,
        {
            "images": data.images,
            "labels": data.labels,
            "contributors": data.contributors,
            "source_index": data.source_index,
        },
        attrs=attrs,
        chunk_rows=1024,
    )


def read_imageset(path: str | Path) -> ImageSet:
    """Load an ImageSet written by `write_imageset` (or generated samples, which carry the same arrays)."""
    arrays = read_arrays(path, ["images", "labels", "contributors", "source_index"])
    images = arrays["images"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InputError(
            f"{path}: images are {images.dtype} {images.shape}, expected uint8 (N, 1 or 3, H, W); "
            "delete the store and rerun to rebuild"
        )
    if any(len(a) != len(images) for a in arrays.values()):
        lengths = {k: len(a) for k, a in arrays.items()}
        raise InputError(f"{path}: arrays of different lengths {lengths}")
    captions = read_attrs(path).get("captions")
    return ImageSet(**arrays, captions=None if captions is None else np.array(captions, dtype=object))
