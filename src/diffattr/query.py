"""Attribute new images with a finished experiment: featurize only them, score against its train features.

`python -m diffattr.query --experiment EXP --method D-TRAK image.png ...` reads the experiment's full
model, the method's finalized train features and the damping its scores chose, so a query of one of the
experiment's generated targets reproduces that target's row of scores/{method}/gen.zarr. It runs no
Snakemake job and writes only the grid PNG it is asked for.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffattr.attribution import TrakScorer
from diffattr.config import validate
from diffattr.data import model_space, read_imageset
from diffattr.device import resolve_device
from diffattr.errors import InputError
from diffattr.families import load_model
from diffattr.families.base import DiffusionModel
from diffattr.gradients import FeaturizerSpec, featurize, make_projector
from diffattr.preflight import workspace_config
from diffattr.registry import METHOD_KINDS, method_kind
from diffattr.report.figures import save_figure, top_attributions_figure
from diffattr.store import read_attrs

# Kinds scored by TRAK on target features of the image alone (Journey-TRAK's need a sampling trajectory).
QUERY_KINDS = tuple(
    name for name, kind in METHOD_KINDS.items() if kind.rule == "trak_scores" and not kind.trajectories
)
MODES = {1: "L", 3: "RGB"}  # PIL's mode of an image with this many channels


@dataclass(frozen=True)
class QuerySource:
    """The files of a finished experiment that a query of one method reads, and how to featurize."""

    method: str
    model: Path
    train_images: Path
    train_shards: list[Path]
    featurizer: dict  # the featurizer config the train features were computed with
    lambda_rel: float
    form: str
    batch_size: int
    device: str


def experiment_config(workdir: str | Path, experiment: str, configfiles: Sequence[str | Path] = ()) -> dict:
    """The validated config of a workspace (config.yaml, the run's --configfile files) for `experiment`."""
    return validate({**workspace_config(workdir, configfiles), "experiment": experiment})


def locate(config: dict, method: str, workdir: str | Path = ".") -> QuerySource:
    """Where a query of `method` finds its model, train features and damping; InputError naming what is
    unsupported or missing (and the Snakemake target that makes it)."""
    if method not in config["methods"]:
        raise InputError(f"unknown method {method!r} (the config's: {', '.join(config['methods'])})")
    entry = config["methods"][method]
    if entry["kind"] not in QUERY_KINDS:
        raise InputError(
            f"method {method!r} is of kind {entry['kind']}; queries support kind(s) {', '.join(QUERY_KINDS)}"
        )
    if entry.get("ensemble", {}).get("members", 1) > 1:
        raise InputError(f"method {method!r} averages an ensemble; queries support single-model methods")
    results = Path(config["results"]) / config["experiment"]
    root = Path(workdir)
    if not (root / results).is_dir():
        known = sorted(p.name for p in (root / config["results"]).glob("*/") if p.is_dir())
        raise InputError(
            f"no results of experiment {config['experiment']!r} in {root / config['results']} "
            f"(found: {', '.join(known) or 'none'})"
        )
    scores = results / "scores" / method / "gen.zarr"
    featurizer = entry["featurizer"]
    shards = [
        results / "grads" / featurizer / "train" / f"{shard}.zarr"
        for shard in range(math.ceil(config["data"]["n_train"] / config["featurize"]["shard_size"]))
    ]
    model = results / "models" / "full" / f"seed{config['train']['seeds'][0]}"
    train_images = results / "data" / "train.zarr"
    for path in [model, train_images, *shards, scores]:
        if not (root / path).exists():
            raise InputError(
                f"{path} is missing: run `snakemake --cores 2 {scores}` first (rule "
                f"{method_kind(entry['kind']).rule} and its inputs: the full model and the train features)"
            )
    attrs = read_attrs(root / shards[0])
    stored = {key: value for key, value in attrs.items() if key != "start"}
    if stored != config["featurizers"][featurizer]:
        raise InputError(
            f"{shards[0]} was computed with featurizer {stored}, the config's '{featurizer}' is now "
            f"{config['featurizers'][featurizer]}: rerun `snakemake --cores 2 {scores}` (or pass the run's "
            "--configfile)"
        )
    chosen = read_attrs(root / scores)
    return QuerySource(
        method=method,
        model=root / model,
        train_images=root / train_images,
        train_shards=[root / shard for shard in shards],
        featurizer=stored,
        lambda_rel=float(chosen["lambda"]),
        form=chosen["form"],
        batch_size=config["featurize"]["batch_size"],
        device=config["device"],
    )


def read_images(paths: Sequence[str | Path], shape: Sequence[int]) -> np.ndarray:
    """Image files as uint8 (N, C, H, W); InputError naming the first that does not open or whose size or
    channels differ from the training images' `shape` (C, H, W)."""
    channels, height, width = shape
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, UnidentifiedImageError) as err:
            raise InputError(f"{path}: not a readable image ({err})") from err
        if image.mode != MODES.get(channels) or image.size != (width, height):
            raise InputError(
                f"{path}: {image.size[0]}x{image.size[1]} {image.mode}; the training images are "
                f"{width}x{height} {MODES.get(channels, f'{channels}-channel')}"
            )
        pixels = np.asarray(image, dtype=np.uint8)
        images.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
    return np.stack(images)


class Query:
    """A method's scorer of new images: the full model and projection loaded, the train kernel factored,
    once; `seconds` holds the time each part took."""

    def __init__(self, source: QuerySource) -> None:
        self.source = source
        self.spec = FeaturizerSpec.from_config(source.featurizer)
        self.seconds: dict[str, float] = {}
        tick = time.perf_counter()
        self.model: DiffusionModel = load_model(source.model).to(resolve_device(source.device))
        if self.model.prompts is not None:
            raise InputError(f"{source.model}: a text-conditioned model; queries support unconditional ones")
        self.projector = make_projector(self.model, self.spec)
        self.seconds["model_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        self.scorer = TrakScorer(source.train_shards, source.form)
        self.seconds["kernel_s"] = time.perf_counter() - tick

    def features(self, images: np.ndarray) -> np.ndarray:
        """Projected gradients (T, k) of uint8 images (T, C, H, W), as the workflow featurizes its targets."""
        tick = time.perf_counter()
        out = featurize(
            self.model,
            model_space(images),
            self.spec,
            self.source.batch_size,
            noise_seed=self.source.featurizer["noise_seed"],
            projector=self.projector,
        )
        self.seconds["featurize_s"] = time.perf_counter() - tick
        return out

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Scores (T, N) of uint8 images (T, C, H, W) against every training image."""
        features = self.features(images)
        tick = time.perf_counter()
        out = self.scorer.scores(features, self.source.lambda_rel)
        self.seconds["score_s"] = time.perf_counter() - tick
        return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices (T, k) of each row's k highest scores, highest first."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def write_grid(
    path: str | Path, images: np.ndarray, train: np.ndarray, scores: np.ndarray, method: str, k: int
) -> None:
    """A PNG with one row per query image: the image, then its k top-scored training images."""
    figure = top_attributions_figure(
        images,
        train,
        {method: scores},
        top=k,
        max_columns=k + 1,
        label="query",
        title=f"Query images (left) and their top-{k} training images by {method}",
    )
    save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffattr.query",
        description="Score images against a finished experiment's training images; print each one's top-k.",
    )
    parser.add_argument("images", nargs="+", type=Path, help="image files of the training images' size")
    parser.add_argument("--experiment", required=True, help="the experiment's name (its results folder)")
    parser.add_argument("--method", required=True, help="a method of the config of kind trak (TRAK, D-TRAK)")
    parser.add_argument("--workdir", type=Path, default=Path("."), help="the workspace (default: here)")
    parser.add_argument(
        "--configfile", nargs="*", default=[], type=Path, help="the --configfile files the run was given"
    )
    parser.add_argument("--top-k", type=int, default=5, help="training images listed per query (default 5)")
    parser.add_argument("--out", type=Path, help="grid PNG to write (default: none)")
    args = parser.parse_args(argv)
    try:
        if args.top_k < 1:
            raise InputError(f"--top-k {args.top_k}: give 1 or more")
        source = locate(
            experiment_config(args.workdir, args.experiment, args.configfile), args.method, args.workdir
        )
        train = read_imageset(source.train_images).images
        images = read_images(args.images, train.shape[1:])
        query = Query(source)
        scores = query.scores(images)
    except InputError as err:
        print(f"diffattr: {err}", file=sys.stderr)
        return 1
    k = min(args.top_k, scores.shape[1])
    for path, row, best in zip(args.images, scores, top_k(scores, k), strict=True):
        print(f"{path}: " + ", ".join(f"train[{i}] {row[i]:.6g}" for i in best))
    if args.out is not None:
        write_grid(args.out, images, train, scores, args.method, k)
        print(f"wrote {args.out}")
    timing = ", ".join(f"{name.removesuffix('_s')} {s:.2f} s" for name, s in query.seconds.items())
    print(f"{args.method} at damping {source.lambda_rel:g}, form {source.form}: {timing}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
