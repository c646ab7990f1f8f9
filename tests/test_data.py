"""Datasets: digits ship with scikit-learn; CIFAR-10 is read from a local tarball in the standard format."""

import io
import pickle
import tarfile

import numpy as np
import pytest

from diffattr.data import load_cifar10_splits, load_digits_splits, read_imageset, write_imageset
from diffattr.errors import InputError
from diffattr.subsets import heldout_targets, lds_subsets


def test_digits_splits_are_stratified_disjoint_and_seeded():
    splits = load_digits_splits([3, 8], n_train=100, n_val=20, seed=7)
    train, val = splits["train"], splits["val"]
    assert train.images.shape == (100, 1, 8, 8) and train.images.dtype == np.uint8
    assert np.bincount(train.labels, minlength=9)[[3, 8]].tolist() == [50, 50]
    assert np.bincount(val.labels, minlength=9)[[3, 8]].tolist() == [10, 10]
    assert not set(train.source_index) & set(val.source_index)
    again = load_digits_splits([3, 8], n_train=100, n_val=20, seed=7)["train"]
    assert np.array_equal(again.source_index, train.source_index)


def test_too_many_images_requested_names_the_key():
    with pytest.raises(InputError, match="config key 'data'.*class 0"):
        load_digits_splits([0, 1], n_train=300, n_val=60, seed=0)


def fake_cifar_tarball(path, folder, members, label_key, labels):
    """A tarball laid out like the official CIFAR python archives, with random images."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for name in members:
            batch = {
                b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8),
                label_key: list(labels),
            }
            payload = pickle.dumps(batch)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def fake_cifar10(path, per_batch=40):
    members = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    fake_cifar_tarball(path, "cifar-10-batches-py", members, b"labels", np.arange(per_batch) % 10)


def test_cifar2_from_a_local_tarball(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    fake_cifar10(path)
    splits = load_cifar10_splits(path, [1, 7], n_train=30, n_val=6, seed=42)
    assert splits["train"].images.shape == (30, 3, 32, 32)
    assert sorted(set(splits["train"].labels)) == [1, 7]
    assert np.bincount(splits["val"].labels, minlength=8)[[1, 7]].tolist() == [3, 3]


def test_missing_cifar_tarball_is_a_one_line_error(tmp_path):
    with pytest.raises(InputError, match="data.cifar10_path.*not found") as err:
        load_cifar10_splits(tmp_path / "nope.tar.gz", [1, 7], 10, 2, 0)
    assert "\n" not in str(err.value)


def test_imageset_round_trip_and_atomic_write(tmp_path):
    data = load_digits_splits([0, 1], 20, 4, 0)["train"]
    write_imageset(tmp_path / "train.zarr", data)
    back = read_imageset(tmp_path / "train.zarr")
    assert np.array_equal(back.images, data.images) and np.array_equal(back.labels, data.labels)
    assert [p.name for p in tmp_path.iterdir()] == ["train.zarr"]  # no temporary left behind


def test_lds_subsets_keep_alpha_of_each_class_and_are_seeded():
    labels = np.repeat([0, 1], [30, 50])
    masks, seeds = lds_subsets(labels, 8, 0.5, seed=3)
    assert masks.shape == (8, 80) and len(set(seeds.tolist())) == 8
    assert (masks[:, labels == 0].sum(1) == 15).all() and (masks[:, labels == 1].sum(1) == 25).all()
    assert np.array_equal(lds_subsets(labels, 8, 0.5, seed=3)[0], masks)
    assert heldout_targets(40, 0.25, 0).sum() == 10


def fake_cifar100(path, per_split=60):
    labels = 40 + np.arange(per_split) % 20
    fake_cifar_tarball(path, "cifar-100-python", ["train", "test"], b"fine_labels", labels)


def test_cifar100_fine_classes_from_a_local_tarball(tmp_path):
    from diffattr.data import load_splits

    path = tmp_path / "cifar-100-python.tar.gz"
    fake_cifar100(path)
    cfg = {
        "source": "cifar100",
        "cifar100_path": str(path),
        "classes": [40, 41, 55],
        "n_train": 6,
        "n_val": 3,
        "seed": 0,
    }
    splits = load_splits(cfg)
    assert splits["train"].images.shape == (6, 3, 32, 32)
    assert np.bincount(splits["train"].labels)[[40, 41, 55]].tolist() == [2, 2, 2]
    with pytest.raises(InputError, match="data.cifar100_path.*not found"):
        load_splits({**cfg, "cifar100_path": str(tmp_path / "missing.tar.gz")})


def test_image_folder_with_metadata_csv(tmp_path):
    from PIL import Image

    from diffattr.data import load_splits

    rows = ["file,artist"]
    for i in range(10):
        Image.fromarray(np.full((12, 10, 3), 20 * i, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'ab'[i % 2]}")
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    folder = {
        "path": str(tmp_path),
        "metadata": str(tmp_path / "meta.csv"),
        "file_column": "file",
        "label_column": "artist",
        "image_size": 8,
    }
    cfg = {
        "source": "image_folder",
        "image_folder": folder,
        "n_train": 7,
        "n_val": 3,
        "seed": 0,
        "classes": [0],
    }
    splits = load_splits(cfg)
    train = splits["train"]
    assert train.images.shape == (7, 3, 8, 8) and train.images.dtype == np.uint8
    assert set(train.metadata) == {"file", "artist"}
    for image, name, label in zip(train.images, train.metadata["file"], train.labels, strict=True):
        assert image.mean() == pytest.approx(20 * int(name.split(".")[0]), abs=1)
        assert label == int(name.split(".")[0]) % 2
    assert not set(train.source_index) & set(splits["val"].source_index)
    with pytest.raises(InputError, match="label_column.*'painter'"):
        load_splits({**cfg, "image_folder": {**folder, "label_column": "painter"}})
    (tmp_path / "blank.csv").write_text("file,artist\n0.png,a\n,b\n")
    with pytest.raises(InputError, match="blank.csv: empty cell in column 'file' \\(line 3\\)"):
        load_splits(
            {
                **cfg,
                "image_folder": {**folder, "metadata": str(tmp_path / "blank.csv")},
                "n_train": 1,
                "n_val": 1,
            }
        )
    (tmp_path / "3.png").unlink()
    with pytest.raises(InputError, match="cannot read image"):
        load_splits({**cfg, "n_train": 9, "n_val": 1})
