"""Per-job setup for workflow scripts: log to the rule's log file, set threads, bad input as one line."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from diffattr.errors import InputError


@contextlib.contextmanager
def job(log_file: str | Path, threads: int = 1) -> Iterator[logging.Logger]:
    """Log (INFO) to `log_file`; on InputError print `diffattr: <message>` and exit 1, no traceback."""
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
    try:
        yield logging.getLogger("diffattr")
    except InputError as err:
        root.error("input error: %s", err)
        sys.exit(f"diffattr: {err}")
