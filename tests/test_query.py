"""python -m diffattr.query on the tiny run: a query of generated targets gives the rows of scores the
workflow computed, its top-k and grid, and one-line errors for bad input with nothing written."""

from pathlib import Path

import numpy as np
from PIL import Image

from diffattr.data import read_imageset
from diffattr.query import Query, experiment_config, locate, main
from diffattr.store import read_arrays

RESULTS = Path("results/tiny")
QUERIED = [0, 3, 5]  # generated targets of the tiny run


def committed(run: Path) -> np.ndarray:
    """The workflow's D-TRAK scores of the tiny run's generated targets (8, N)."""
    return read_arrays(run / RESULTS / "scores/D-TRAK/gen.zarr", ["scores"])["scores"]


def targets(run: Path) -> np.ndarray:
    return read_imageset(run / RESULTS / "samples/full.zarr").images


def write_png(path: Path, image: np.ndarray) -> Path:
    """A (C, H, W) uint8 image as a PNG file."""
    Image.fromarray(image[0] if len(image) == 1 else image.transpose(1, 2, 0)).save(path)
    return path


def test_query_reproduces_the_workflows_scores(tiny_run):
    source = locate(experiment_config(tiny_run, "tiny"), "D-TRAK", tiny_run)
    scores = Query(source).scores(targets(tiny_run)[QUERIED])
    expected = committed(tiny_run)[QUERIED]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_command_prints_top_k_and_writes_the_grid(tiny_run, tmp_path, capsys):
    images = [write_png(tmp_path / f"gen{i}.png", targets(tiny_run)[i]) for i in QUERIED[:2]]
    grid = tmp_path / "grid.png"
    argv = ["--experiment", "tiny", "--method", "D-TRAK", "--workdir", str(tiny_run), "--top-k", "3"]
    assert main([*argv, "--out", str(grid), *map(str, images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for line, row in zip(lines, committed(tiny_run)[QUERIED[:2]], strict=False):
        listed = [int(part.split("]")[0]) for part in line.split("train[")[1:]]
        assert listed == list(np.argsort(-row)[:3])
    with Image.open(grid) as png:  # 2 rows of 1 + 3 cells of 0.8 in at 100 dpi, 0.15 in labels, 0.4 title
        assert png.size == (320, 230)


def bad_cases(tmp_path: Path, run: Path) -> dict[str, tuple[dict[str, str], Path, str]]:
    """Command lines that must fail: options over the good ones, the image, a piece of the one-line error."""
    good = write_png(tmp_path / "good.png", targets(run)[0])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    large = write_png(tmp_path / "large.png", np.zeros((1, 16, 16), np.uint8))
    rgb = write_png(tmp_path / "rgb.png", np.zeros((3, 8, 8), np.uint8))
    no_features = tmp_path / "no-features"  # the run without its gradient stores
    (no_features / RESULTS).mkdir(parents=True)
    (no_features / "config.yaml").symlink_to(run / "config.yaml")
    for part in (run / RESULTS).iterdir():
        if part.name != "grads":
            (no_features / RESULTS / part.name).symlink_to(part)
    return {
        "experiment": ({"--experiment": "nope"}, good, "no results of experiment 'nope'"),
        "method": ({"--method": "D-TRACK"}, good, "unknown method 'D-TRACK'"),
        "kind": ({"--method": "DAS"}, good, "queries support kind(s) trak"),
        "features": ({"--workdir": str(no_features)}, good, "grads/dtrak/train/0.zarr is missing: run"),
        "corrupt": ({}, corrupt, "corrupt.png: not a readable image"),
        "size": ({}, large, "large.png: 16x16 L; the training images are 8x8 L"),
        "channels": ({}, rgb, "rgb.png: 8x8 RGB; the training images are 8x8 L"),
        "top-k": ({"--top-k": "0"}, good, "--top-k 0"),
    }


def test_bad_input_is_one_line_and_writes_nothing(tiny_run, tmp_path, capsys):
    good = {"--experiment": "tiny", "--method": "D-TRAK", "--workdir": str(tiny_run)}
    for name, (options, image, message) in bad_cases(tmp_path, tiny_run).items():
        options = {**good, **options, "--out": str(tmp_path / "grid.png")}
        before = sorted(tmp_path.rglob("*"))
        assert main([*(part for item in options.items() for part in item), str(image)]) == 1, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("diffattr: ") and "\n" not in err and message in err, (name, err)
        assert sorted(tmp_path.rglob("*")) == before, name
