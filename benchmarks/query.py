"""Seconds per image of `python -m diffattr.query --method D-TRAK` on the demo's config, by part: start-up
(Python and imports), model (load and the projection matrix), kernel (factor the train features),
featurize and score. Writes benchmarks/results/query.csv.

    python benchmarks/query.py

It queries a finished `make demo` (results/demo) when there is one. Otherwise it builds a stand-in
workspace with the demo's config, data and featurizer, an untrained full model, random train features of
the demo's shape and a placeholder damping: a query's time depends on the shapes, not on these values.
The `source` column says which. `imports_s` is the part of start-up that importing diffattr.query takes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from diffattr.data import load_splits, read_imageset, write_imageset
from diffattr.families import build_model
from diffattr.query import experiment_config
from diffattr.store import write_arrays

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METHOD, FEATURIZER = "D-TRAK", "dtrak"
IMAGES = (1, 4)  # query images per command
PARTS = ("model", "kernel", "featurize", "score")


def stand_in(folder: Path) -> Path:
    """A workspace with the demo's data, an untrained full model and random D-TRAK train features."""
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    config = experiment_config(folder, "demo")
    results = folder / config["results"] / "demo"
    train = load_splits(config["data"])["train"]
    write_imageset(results / "data" / "train.zarr", train)
    model = build_model(
        config["model"], config["scheduler"], train.images.shape[1:], config["train"]["seeds"][0]
    )
    model.save_pretrained(results / "models" / "full" / f"seed{config['train']['seeds'][0]}")
    featurizer = config["featurizers"][FEATURIZER]
    features = np.random.default_rng(0).standard_normal((len(train), featurizer["dim"]), np.float32)
    write_arrays(
        results / "grads" / FEATURIZER / "train" / "0.zarr",
        {"features": features, "position": np.arange(len(features))},
        attrs={"start": 0, **featurizer},
    )
    write_arrays(  # the damping a demo run chooses is one of the grid's; its value does not change the time
        results / "scores" / METHOD / "gen.zarr",
        {"scores": np.zeros((1, len(features)), np.float32)},
        attrs={"lambda": config["attribute"]["lambda_grid"][0], "form": "auto"},
    )
    return folder


def query_images(workdir: Path, folder: Path, count: int) -> list[Path]:
    """The first `count` training images as PNG files (queries of the images' size and channels)."""
    images = read_imageset(workdir / "results" / "demo" / "data" / "train.zarr").images[:count]
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"query{i}.png")
        Image.fromarray(image[0] if len(image) == 1 else image.transpose(1, 2, 0)).save(paths[-1])
    return paths


def measure(workdir: Path, images: list[Path], grid: Path) -> dict[str, float]:
    """Wall seconds of one query command and the seconds of each part it reports."""
    command = [sys.executable, "-m", "diffattr.query", "--experiment", "demo", "--method", METHOD]
    tick = time.perf_counter()
    done = subprocess.run(
        [*command, "--workdir", str(workdir), "--out", str(grid), *map(str, images)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - tick
    parts = {name: float(s) for name, s in re.findall(r"(\w+) ([\d.]+) s", done.stderr.splitlines()[-1])}
    return {"wall_s": wall, **{f"{p}_s": parts[p] for p in PARTS}, "startup_s": wall - sum(parts.values())}


def import_seconds() -> float:
    """Wall seconds of a Python process that only imports diffattr.query."""
    tick = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import diffattr.query"], check=True)
    return time.perf_counter() - tick


def main() -> None:
    finished = (ROOT / "results" / "demo" / "scores" / METHOD / "gen.zarr").exists()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        workdir = ROOT if finished else stand_in(tmp)
        source = "results/demo" if finished else "stand-in: demo config, untrained full model"
        rows = []
        for count in IMAGES:
            row = measure(workdir, query_images(workdir, tmp, count), tmp / "grid.png")
            rows.append(
                {
                    "source": source,
                    "method": METHOD,
                    "images": count,
                    **{key: round(value, 2) for key, value in row.items()},
                    "imports_s": round(import_seconds(), 2),
                    "seconds_per_image": round(row["wall_s"] / count, 2),
                    "cores": os.cpu_count(),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                    "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                }
            )
    frame = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    frame.to_csv(RESULTS / "query.csv", index=False)
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
