"""One driver per workspace, and a rerun after a killed driver that needs no manual step.

The killed driver and the job it left running are small Python processes that use diffattr.workspace as
the Snakefile and the jobs do; every other driver is a real Snakemake on the workflow."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from subprocess import PIPE

import pytest
import yaml

from diffattr.workspace import takes_workspace
from tests.workflow_helpers import ROOT, SNAKEMAKE, TINY, make_workspace

TARGET = "results/tiny/data/train.zarr"  # the first job of the workflow, a few seconds
HOST = socket.gethostname()

# A driver that took the workspace and started one job (the job runs until the file `release` exists),
# as Snakemake's local executor starts a script: a child process with the driver's environment.
KILLED_DRIVER = """
import subprocess, sys, time
from pathlib import Path
from diffattr.workspace import hold_workspace
ws = Path(sys.argv[1])
hold_workspace(ws)
subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]])
time.sleep(600)
"""
ORPHAN_JOB = """
import os, sys, time
from pathlib import Path
from diffattr.workspace import join_driver
ws = Path(sys.argv[1])
join_driver(ws)
(ws / "job.token").write_text(os.environ["DIFFATTR_DRIVER"])
(ws / "job.pid").write_text(str(os.getpid()))
while not (ws / "release").exists():
    time.sleep(0.05)
(ws / "job.ended").write_text(str(time.time()))
"""


@pytest.mark.parametrize(
    ("argv", "takes"),
    [
        (["--cores", "2"], True),
        (["--profile", "profiles/local", "results/demo/report/index.html"], True),
        (["--touch"], True),
        (["--unlock"], True),
        (["--report-after-run", "--report", "r.html"], True),
        (["-n"], False),
        (["-np", "--cores", "2"], False),
        (["--dry-run"], False),
        (["--lint"], False),
        (["--summary"], False),
        (["--report", "r.html"], False),
        (["--rulegraph"], False),
        (["--cores", "2", "--nolock"], False),
    ],
)
def test_only_commands_that_run_jobs_take_the_workspace(argv, takes):
    assert takes_workspace(argv) is takes


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_both_profiles_rerun_incomplete_jobs(profile):
    assert (
        yaml.safe_load((ROOT / "profiles" / profile / "config.yaml").read_text())["rerun-incomplete"] is True
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until `path` exists while `process` runs."""
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None and time.time() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_a_killed_driver_needs_no_unlock_its_job_is_waited_for_and_a_second_driver_fails(tmp_path):
    try:
        run_killed_driver_scenario(tmp_path)
    finally:  # a failing run must not leave the orphan job (it waits for this file) behind
        (tmp_path / "ws" / "release").touch()


def run_killed_driver_scenario(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", TINY)
    # A driver killed with SIGKILL: Snakemake's lock files stay, its job runs on as an orphan.
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_DRIVER, str(ws), ORPHAN_JOB], start_new_session=True
    )
    wait_for(ws / "job.pid", killed)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    orphan = int((ws / "job.pid").read_text())
    (ws / ".snakemake" / "locks").mkdir(parents=True)
    (ws / ".snakemake" / "locks" / "0.output.lock").write_text(f"{TARGET}\n")

    # The same command again: no --unlock; it waits for the orphan before anything runs.
    rerun_err = tmp_path / "rerun.err"
    with rerun_err.open("w") as err:
        rerun = subprocess.Popen(
            [*SNAKEMAKE, "-d", str(ws), "--cores", "1", TARGET],
            cwd=ROOT,
            stderr=err,
            stdout=subprocess.DEVNULL,
        )
    deadline = time.time() + 120
    while "waiting for the jobs" not in rerun_err.read_text():
        assert rerun.poll() is None and time.time() < deadline, rerun_err.read_text()
        time.sleep(0.1)

    # Meanwhile a second driver fails at once with one line; a dry run goes on beside (both at once).
    second, dry = (
        subprocess.Popen(
            [*SNAKEMAKE, "-d", str(ws), *args, TARGET], cwd=ROOT, text=True, stdout=PIPE, stderr=PIPE
        )
        for args in (["--cores", "1"], ["-n"])
    )
    (_, second_err), (dry_out, _) = second.communicate(timeout=120), dry.communicate(timeout=120)
    assert second.returncode == 1
    assert second_err.strip().splitlines() == [
        f"diffattr: another driver is running in {ws} ({HOST} pid {rerun.pid}); wait for it to end "
        "or stop it (one driver per folder; a dry run -n may run beside it)"
    ]
    assert dry.returncode == 0 and "prepare_data" in dry_out

    assert rerun.poll() is None and not (ws / "results").exists(), "the rerun went on beside the orphan"
    (ws / "release").touch()
    assert rerun.wait(timeout=300) == 0, rerun_err.read_text()
    assert (ws / TARGET).stat().st_mtime > float((ws / "job.ended").read_text())
    log = rerun_err.read_text()
    assert "diffattr: removed the Snakemake lock that a killed driver left (.snakemake/locks)" in log
    assert f"(pid {orphan}); stop them to go on now, their outputs are redone" in log
    assert not (ws / ".snakemake" / "locks").exists() or not any((ws / ".snakemake" / "locks").iterdir())

    # A job of the killed driver that starts only now (queued on a cluster) stops before writing anything.
    late = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
                from diffattr.runtime import job
                with job("late.log"):
                    open("late.out", "w").close()
            """),
        ],
        cwd=ws,
        env={**os.environ, "DIFFATTR_DRIVER": (ws / "job.token").read_text()},
        capture_output=True,
        text=True,
    )
    assert late.returncode == 1
    assert late.stderr.strip().splitlines() == [
        f"diffattr: this job's driver has ended and a newer driver ({HOST} pid {rerun.pid}) "
        f"runs in {ws}; it redoes this job"
    ]
    assert not (ws / "late.log").exists() and not (ws / "late.out").exists()
