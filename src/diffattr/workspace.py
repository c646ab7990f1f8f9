"""One driver per workspace, and no manual step after a killed one.

Snakemake's own lock is a set of files: a killed driver leaves them behind (the rerun then needs
`--unlock`), and two drivers started at once can both get past them. The driver here takes an
exclusive flock(2) on `.snakemake/diffattr/driver.lock` first; the kernel releases it when the driver
exits, `kill -9` included, so while it is held no other driver lives, and Snakemake's lock files are
stale by construction. Jobs (diffattr.runtime.job; on a cluster also the Snakefile, before Snakemake
clears their outputs) hold a shared flock on `jobs.lock` for their life and run only for the current
driver (its token, passed in the environment): a new driver waits for the jobs a killed one left
running, and its queued jobs stop when they start, so no two jobs ever write the same output.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import shutil
import socket
import sys
import uuid
from pathlib import Path

from diffattr.errors import InputError

DRIVER_ENV = "DIFFATTR_DRIVER"  # the token of the driver that started a job, inherited by the job
STATE = Path(".snakemake") / "diffattr"  # in the workspace (the working directory of driver and jobs)
NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # file systems without flock

# Snakemake commands that only read the workspace (argparse names): they neither take nor wait for it.
READ_ONLY = (
    "dryrun",
    "lint",
    "list_rules",
    "list_target_rules",
    "print_compilation",
    "dag",
    "rulegraph",
    "filegraph",
    "d3dag",
    "summary",
    "detailed_summary",
    "list_changes",
    "list_input_changes",
    "list_params_changes",
    "list_untracked",
    "list_conda_envs",
    "containerize",
    "archive",
    "export_cwl",
    "generate_unit_tests",
)


class WorkspaceBusy(InputError):
    """Another driver holds the workspace, or a job belongs to a driver that is no longer current."""


def takes_workspace(argv: list[str]) -> bool:
    """Whether a Snakemake command line runs or changes jobs and so needs the workspace to itself.

    Dry runs, --lint, listings, graphs, summaries and --report (without a run) only read it; --nolock
    opts out. Read with Snakemake's own parser, so that -np, --dry-r and the like count.
    """
    from snakemake.cli import get_argument_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args, _ = get_argument_parser().parse_known_args(argv)
    except SystemExit:
        return True  # not a Snakemake command line: the safe side
    if args.report is not None and not args.report_after_run:
        return False
    return not (args.nolock or any(getattr(args, name, None) for name in READ_ONLY))


def _lock(path: Path, mode: int) -> int:
    """Open `path` (created if missing) and flock it with `mode`; the descriptor, or raise OSError.

    Nothing closes the descriptor unless asked: the lock lasts until the process exits.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd


def _holders(path: Path) -> list[int]:
    """Processes on this machine that hold a flock on `path` (from /proc/locks; empty where absent)."""
    stat = path.stat()
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    fields = (line.split() for line in lines if "->" not in line)
    return sorted({int(f[4]) for f in fields if len(f) > 5 and f[1] == "FLOCK" and f[5] == inode})


def hold_workspace(workdir: Path) -> None:
    """Make this process the workspace's one driver until it exits; raise WorkspaceBusy if another is.

    Then remove Snakemake's lock files (only a dead driver can have left them), make this driver the
    current one, and wait for jobs that a killed driver left running.
    """
    state = workdir / STATE
    state.mkdir(parents=True, exist_ok=True)
    try:
        _lock(state / "driver.lock", fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until this driver exits
    except BlockingIOError:
        current = state / "driver"
        owner = current.read_text().rsplit(" ", 1)[0] if current.exists() else "unknown"
        raise WorkspaceBusy(
            f"another driver is running in {workdir} ({owner}); wait for it to end or stop it "
            "(one driver per folder; a dry run -n may run beside it)"
        ) from None
    except OSError as err:
        if err.errno not in NO_LOCKING:
            raise
        print(
            f"diffattr: {workdir}'s file system cannot lock files: a second driver is not refused",
            file=sys.stderr,
        )
        return

    stale = workdir / ".snakemake" / "locks"
    if stale.is_dir() and any(stale.iterdir()):
        shutil.rmtree(stale)
        print(
            "diffattr: removed the Snakemake lock that a killed driver left (.snakemake/locks)",
            file=sys.stderr,
        )

    token = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex}"
    (state / "driver.tmp").write_text(token)
    os.replace(state / "driver.tmp", state / "driver")
    os.environ[DRIVER_ENV] = token

    try:
        jobs = _lock(state / "jobs.lock", fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pids = _holders(state / "jobs.lock")
        where = f"pid {', '.join(map(str, pids))}" if pids else "not on this machine: SLURM jobs, see squeue"
        print(
            f"diffattr: waiting for the jobs that a killed driver left running to end ({where}); "
            "stop them to go on now, their outputs are redone",
            file=sys.stderr,
        )
        jobs = _lock(state / "jobs.lock", fcntl.LOCK_EX)
    os.close(jobs)  # released: this driver's jobs take it shared


def join_driver(workdir: Path) -> None:
    """In a job: hold the workspace's job lock (shared) until the job exits, and run only for the
    current driver; raise WorkspaceBusy for a job of a driver that a newer one replaced.

    Nothing to do outside a driver's job (no token in the environment) or where files cannot be locked.
    """
    token = os.environ.get(DRIVER_ENV)
    state = workdir / STATE
    if not token or not (state / "driver").exists():
        return
    try:
        _lock(state / "jobs.lock", fcntl.LOCK_SH)  # held until this job exits
    except OSError as err:
        if err.errno not in NO_LOCKING:
            raise
        return
    current = (state / "driver").read_text()
    if current != token:
        owner = current.rsplit(" ", 1)[0]
        raise WorkspaceBusy(
            f"this job's driver has ended and a newer driver ({owner}) runs in {workdir}; it redoes this job"
        )
