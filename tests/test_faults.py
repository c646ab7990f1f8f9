"""No lost work under faults: the workflow killed (SIGKILL, driver and jobs at once) during every kind of
stage, then resumed, ends with the same bits as an uninterrupted run and never redoes a finished job."""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.workflow_helpers import ROOT, SNAKEMAKE, TINY, TINY_SHAPLEY, deep_update, snakemake

# The stage kinds killed, by rule: training, a featurize shard, scores, a coalition model, a property.
STAGES = ["train_lds", "featurize", "trak_scores", "coalition_model", "coalition_property"]
TARGETS = [
    "results/faults/scores/TRAK/val.zarr",
    "results/faults/scores/TRAK/gen.zarr",
    "results/faults/shapley/values/kernelshap-sparse_ft.csv",
]


def timeless(node: object) -> object:
    """A JSON value without its wall-clock entries (seconds, *_seconds, *_s), which differ between runs."""
    if isinstance(node, dict):
        return {
            k: timeless(v) for k, v in node.items() if not (k == "seconds" or k.endswith(("_seconds", "_s")))
        }
    if isinstance(node, list):
        return [timeless(v) for v in node]
    return node


def fault_config() -> dict:
    """The tiny workflow cut to one featurizer, two methods, 2 LDS subsets and one way of valuation."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    deep_update(config, copy.deepcopy(TINY))
    config.update(experiment="faults", featurize={"shard_size": 40})
    config["lds"]["num_subsets"] = 2
    config["featurizers"] = {"trak": TINY["featurizers"]["trak"]}
    config["methods"] = {"TRAK": {"kind": "trak", "featurizer": "trak"}, "pixel": {"kind": "pixel"}}
    if "counterfactual" in config:  # the counterfactual stage is not needed for the targets here
        config["counterfactual"]["enabled"] = False
    config["shapley"] = {
        **copy.deepcopy(TINY_SHAPLEY["shapley"]),
        "how": ["sparse_ft"],
        "num_coalitions": 2,
        "heldout": {"num_coalitions": 2, "seeds": [0]},
        "datamodel": {"num_coalitions": 0},
    }
    return config


def workspace(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(fault_config()))
    return path


def incomplete_outputs(workdir: Path) -> set[Path]:
    """Outputs Snakemake marked as started but not finished (its file persistence, .snakemake/incomplete)."""
    marks = workdir / ".snakemake" / "incomplete"
    found = set()
    for mark in marks.rglob("*") if marks.is_dir() else []:
        if mark.is_file():
            encoded = "".join(p.lstrip("@") for p in mark.relative_to(marks).parts)
            try:
                found.add((workdir / base64.urlsafe_b64decode(encoded).decode()).resolve())
            except ValueError:
                continue  # Snakemake's own bookkeeping files
    return found


def output_files(workdir: Path) -> dict[str, tuple[int, int]]:
    """Every finished output file (not logs, benchmarks, temporaries or incomplete outputs): inode, mtime."""
    out = workdir / "results" / "faults"
    unfinished = incomplete_outputs(workdir)
    files = {}
    for path in out.rglob("*"):
        rel = path.relative_to(out)
        if not path.is_file() or rel.parts[0] in ("logs", "benchmarks") or ".tmp-" in str(rel):
            continue
        if unfinished & {path.resolve(), *path.resolve().parents}:
            continue
        stat = path.stat()
        files[str(rel)] = (stat.st_ino, stat.st_mtime_ns)
    return files


def started(workdir: Path, stages: set[str], since: float) -> str | None:
    """A stage among `stages` with a job that started (opened its log) after `since`."""
    for stage in sorted(stages):
        for log in (workdir / "results" / "faults" / "logs" / stage).glob("*.log"):
            if log.stat().st_mtime > since:
                return stage
    return None


def kill_during_each_stage(workdir: Path, rng: random.Random) -> tuple[int, dict[str, tuple[int, int]]]:
    """Start the run, SIGKILL it a random moment after a job of a not-yet-killed stage starts, resume;
    until every stage kind was hit. Returns the kills and the outputs finished at each kill."""
    remaining, kills, finished = set(STAGES), 0, {}
    while remaining:
        since = time.time()
        driver = subprocess.Popen(
            [*SNAKEMAKE, "-d", str(workdir), "--cores", "2", "--rerun-incomplete", *TARGETS],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        stage = None
        while driver.poll() is None and stage is None:
            time.sleep(0.05)
            stage = started(workdir, remaining, since)
        if stage is None:
            break  # the run ended before a job of a remaining stage started: asserted below
        time.sleep(rng.uniform(0.0, 1.5))
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        kills += 1
        remaining.discard(stage)
        for path, stamp in output_files(workdir).items():
            finished.setdefault(path, stamp)
        snakemake(workdir, "--unlock")
    assert not remaining, f"no job of {sorted(remaining)} was caught running"
    return kills, finished


def comparable(workdir: Path) -> dict[str, bytes]:
    """Bytes of every result file except logs and benchmarks; JSON without its wall-clock entries."""
    out = workdir / "results" / "faults"
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if not path.is_file() or rel.parts[0] in ("logs", "benchmarks") or ".tmp-" in str(rel):
            continue  # a job killed mid-write leaves its hidden temporary, never a result
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.dumps(timeless(json.loads(data)), sort_keys=True).encode()
        files[str(path.relative_to(out))] = data
    return files


@pytest.mark.slow
def test_killed_runs_resume_to_the_bits_of_an_uninterrupted_run(tmp_path):
    clean = workspace(tmp_path / "clean")
    snakemake(clean, "--cores", "2", *TARGETS)

    faulty = workspace(tmp_path / "faulty")
    kills, finished = kill_during_each_stage(faulty, random.Random(12))
    snakemake(faulty, "--cores", "2", "--rerun-incomplete", *TARGETS)

    after = output_files(faulty)
    redone = sorted(path for path, stamp in finished.items() if after.get(path) != stamp)
    expected, got = comparable(clean), comparable(faulty)
    mismatches = sorted(path for path in expected.keys() | got.keys() if expected.get(path) != got.get(path))
    print(f"kills survived {kills}, finished outputs redone {len(redone)}, mismatches {len(mismatches)}")
    assert kills == len(STAGES)
    assert not redone, redone
    assert not mismatches, mismatches
    for target in TARGETS:  # score matrices and values included, bit for bit
        assert any(path.startswith(Path(target).relative_to("results/faults").as_posix()) for path in got)
