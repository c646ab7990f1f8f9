"""Datasets as uint8 image arrays: scikit-learn digits (shipped with it) and CIFAR-10 from a local tarball."""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffattr.errors import InputError
from diffattr.store import read_arrays, write_arrays

CIFAR10_MEMBER = "cifar-10-batches-py"


@dataclass
class ImageSet:
    """Images (N, C, H, W) uint8 with labels, contributor ids and their index in the source dataset."""

    images: np.ndarray
    labels: np.ndarray
    contributors: np.ndarray
    source_index: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def tensor(self) -> torch.Tensor:
        """Images as float32 in [-1, 1], the diffusion model's data space."""
        return torch.from_numpy(self.images).float().div(127.5).sub(1.0)


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
    path: str | Path, classes: list[int], n_train: int, n_val: int, seed: int
) -> dict[str, ImageSet]:
    """CIFAR-10 from the standard `cifar-10-python.tar.gz`: train from its train split, val from its test one.

    With classes [1, 7], n_train 5000, n_val 1000, seed 42 this is D-TRAK's CIFAR-2.
    """
    train_images, train_labels = _read_cifar10(path, [f"data_batch_{i}" for i in range(1, 6)])
    test_images, test_labels = _read_cifar10(path, ["test_batch"])
    rng = np.random.default_rng(seed)
    train = stratified_pick(train_labels, classes, per_class_counts(n_train, len(classes)), rng)
    val = stratified_pick(test_labels, classes, per_class_counts(n_val, len(classes)), rng)
    return {
        "train": _subset(train_images, train_labels, train),
        "val": _subset(test_images, test_labels, val),
    }


def _read_cifar10(path: str | Path, members: list[str]) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"config key 'data.cifar10_path': file not found: {path} (download "
            "cifar-10-python.tar.gz once and point this key at it)"
        )
    images, labels = [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in members:
                handle = tar.extractfile(f"{CIFAR10_MEMBER}/{member}")
                batch = pickle.load(handle, encoding="bytes")
                images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(batch[b"labels"], np.int64))
    except (tarfile.TarError, KeyError, OSError, pickle.UnpicklingError) as exc:
        raise InputError(f"{path}: not a valid cifar-10-python.tar.gz ({exc})") from exc
    return np.concatenate(images), np.concatenate(labels)


def _subset(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> ImageSet:
    return ImageSet(
        images=np.ascontiguousarray(images[idx]),
        labels=labels[idx],
        contributors=labels[idx].copy(),
        source_index=idx.astype(np.int64),
    )


def load_splits(data_config: dict) -> dict[str, ImageSet]:
    """Build the train and val splits named by the `data` section of the config."""
    args = (
        data_config["classes"],
        data_config["n_train"],
        data_config["n_val"],
        data_config["seed"],
    )
    if data_config["source"] == "digits":
        return load_digits_splits(*args)
    if data_config["source"] == "cifar10":
        return load_cifar10_splits(data_config["cifar10_path"], *args)
    raise InputError(f"config key 'data.source': unknown source {data_config['source']!r}")


def write_imageset(path: str | Path, data: ImageSet, attrs: dict | None = None) -> None:
    """Store an ImageSet as a zarr group, chunked by sample."""
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
    return ImageSet(**arrays)
