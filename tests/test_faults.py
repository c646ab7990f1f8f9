"""No lost work under faults: the workflow killed (SIGKILL, driver and jobs at once) during every kind of
stage, then resumed with the same command (profiles/local, which reruns incomplete jobs; no --unlock),
ends with the same bits as an uninterrupted run and never redoes a finished job.

Each branch starts from a copy of its shared tiny run with the outputs of a few jobs of the killed stages
deleted (whole batch jobs: a batch job remakes all its models), and is compared with that run."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.workflow_helpers import ROOT, SNAKEMAKE, copy_workspace, snakemake

# LDS branch: the 4 LDS models (one batch job) and their outputs, trak's 4 shards (one batch job) and
# TRAK's scores; killed in training, a featurize batch and scoring.
LDS_STAGES = ["train_lds", "featurize", "trak_scores"]
LDS_DELETED = ["models/lds", "outputs/lds", "grads/trak", "scores/TRAK"]
LDS_TARGETS = ["results/tiny/scores/TRAK/val.zarr", "results/tiny/scores/TRAK/gen.zarr"]
# Contributor branch: the 8 sparse-FT coalition models (one batch job), their properties (one batch job)
# and the values fitted on them; killed in a coalition model and a property.
CONTRIBUTOR_STAGES = ["coalition_model", "coalition_property"]
CONTRIBUTOR_DELETED = [
    "shapley/models/coalition/sparse_ft",
    "shapley/properties/sparse_ft",
    "shapley/values/kernelshap-sparse_ft.csv",
]
CONTRIBUTOR_TARGETS = ["results/tiny-shapley/shapley/values/kernelshap-sparse_ft.csv"]


def timeless(node: object) -> object:
    """A JSON value without its wall-clock entries (seconds, *_seconds, *_s), which differ between runs."""
    if isinstance(node, dict):
        return {
            k: timeless(v) for k, v in node.items() if not (k == "seconds" or k.endswith(("_seconds", "_s")))
        }
    if isinstance(node, list):
        return [timeless(v) for v in node]
    return node


def results(workdir: Path) -> Path:
    """The one experiment's output folder of a workspace (results/<experiment>)."""
    (out,) = (workdir / "results").iterdir()
    return out


def without(finished: Path, workdir: Path, deleted: list[str]) -> Path:
    """A copy of a finished run at `workdir` with the outputs `deleted` (paths in its output folder) gone."""
    copy_workspace(finished, workdir)
    for rel in deleted:
        path = results(workdir) / rel
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return workdir


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
    out = results(workdir)
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
        for log in (results(workdir) / "logs" / stage).glob("*.log"):
            if log.stat().st_mtime > since:
                return stage
    return None


def kill_during_each_stage(
    workdir: Path, stages: list[str], targets: list[str], rng: random.Random
) -> tuple[int, dict[str, tuple[int, int]]]:
    """Start the run, SIGKILL it a random moment after a job of a not-yet-killed stage starts, resume with
    the same command (no --unlock); until every stage kind was hit. Returns the kills and the outputs
    finished at each kill."""
    remaining, kills, finished = set(stages), 0, {}
    while remaining:
        since = time.time()
        driver = subprocess.Popen(
            [*SNAKEMAKE, "-d", str(workdir), "--profile", "profiles/local", "--cores", "2", *targets],
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
    assert not remaining, f"no job of {sorted(remaining)} was caught running"
    return kills, finished


def comparable(workdir: Path) -> dict[str, bytes]:
    """Bytes of every result file except logs and benchmarks; JSON without its wall-clock entries."""
    out = results(workdir)
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


def assert_killed_runs_resume_to_the_bits_of(uninterrupted, faulty, stages, targets, seed):
    """Kill `faulty` during each of `stages`, resume it to `targets`: no finished output is redone, and
    every result file has the bytes of the `uninterrupted` run (the deleted ones made again among them)."""
    kills, finished = kill_during_each_stage(faulty, stages, targets, random.Random(seed))
    snakemake(faulty, "--profile", "profiles/local", "--cores", "2", *targets)

    after = output_files(faulty)
    redone = sorted(path for path, stamp in finished.items() if after.get(path) != stamp)
    expected, got = comparable(uninterrupted), comparable(faulty)
    mismatches = sorted(path for path in expected.keys() | got.keys() if expected.get(path) != got.get(path))
    print(f"kills survived {kills}, finished outputs redone {len(redone)}, mismatches {len(mismatches)}")
    assert kills == len(stages)
    assert not redone, redone
    assert not mismatches, mismatches


@pytest.mark.slow
def test_killed_lds_stages_resume_to_the_bits_of_an_uninterrupted_run(tiny_run, tmp_path):
    faulty = without(tiny_run, tmp_path / "faulty", LDS_DELETED)
    assert_killed_runs_resume_to_the_bits_of(tiny_run, faulty, LDS_STAGES, LDS_TARGETS, 12)


@pytest.mark.slow
def test_killed_contributor_stages_resume_to_the_bits_of_an_uninterrupted_run(tiny_shapley_run, tmp_path):
    faulty = without(tiny_shapley_run, tmp_path / "faulty", CONTRIBUTOR_DELETED)
    assert_killed_runs_resume_to_the_bits_of(
        tiny_shapley_run, faulty, CONTRIBUTOR_STAGES, CONTRIBUTOR_TARGETS, 12
    )
