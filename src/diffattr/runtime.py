"""Per-job setup for workflow scripts: log to the rule's log file, set threads, bad input as one line."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from diffattr.errors import InputError
from diffattr.workspace import WorkspaceBusy, join_driver

STARTUP = "start-up"  # the log line diffattr.timings reads each job's start-up cost from


@contextlib.contextmanager
def job(log_file: str | Path, threads: int = 1) -> Iterator[logging.Logger]:
    """Log (INFO) to `log_file`; on InputError print `diffattr: <message>` and exit 1, no traceback.

    A job of a driver that a newer one replaced stops here, before it writes anything (diffattr.workspace).
    The block is a script's whole work: when it ends without error, the process ends (finished()).
    """
    try:
        join_driver(Path.cwd())
    except WorkspaceBusy as err:
        sys.exit(f"diffattr: {err}")
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("accelerate", "diffusers", "numcodecs", "zarr", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if "torch" in sys.modules:  # scripts import what they use first; CPU-only rules skip torch
        sys.modules["torch"].set_num_threads(threads)
    log = logging.getLogger("diffattr")
    log.info("%s: %.2f s wall, %.2f s CPU before the job's work (interpreter, imports)", STARTUP, *startup())
    try:
        yield log
    except InputError as err:
        root.error("input error: %s", err)
        sys.exit(f"diffattr: {err}")
    finished()


def finished() -> None:
    """End a job whose outputs are written and closed, without the interpreter's teardown of torch,
    diffusers and transformers' thousands of modules: ~3 s of CPU per job (docs/performance.md)."""
    atexit._run_exitfuncs()  # what a normal exit runs first: logging.shutdown among others
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def startup() -> tuple[float, float]:
    """Wall and CPU seconds this process has run so far: at a job's start, what starting it cost."""
    import psutil  # a dependency of snakemake, which runs every job

    return time.time() - psutil.Process().create_time(), time.process_time()
