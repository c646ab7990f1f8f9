"""Several tiny models in one job: each made exactly as in a job of its own, into its own output.

A job of the embedded default spends more time starting (importing torch and diffusers) than
training a 164k-parameter UNet; `lds.models_per_job` and `shapley.models_per_job` let one process
make a batch of models in turn. Each model starts from the same global state as a fresh process
(random generators reseeded, the job's thread count), so a model made in a batch is bitwise the
model made alone, and a partial rerun of a batch rewrites the same bytes.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def reset_global_state(threads: int | None = None) -> None:
    """Put Python's, NumPy's and (when imported) torch's global state where a fresh process has it."""
    random.seed(0)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(0)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.manual_seed(0)
        if threads is not None:
            torch.set_num_threads(threads)


def each_model(
    models: Sequence[dict[str, Any]], outputs: Sequence[str | Path], threads: int | None = None
) -> Iterator[tuple[dict[str, Any], Path]]:
    """Yield (the model's parameters, its output path) for every model of a batch, one at a time.

    Before each model the global state is reset, so what a model depends on is its own parameters
    only; each model's time is logged.
    """
    models, outputs = list(models), [Path(p) for p in outputs]
    if len(models) != len(outputs):
        raise ValueError(f"a batch of {len(models)} models has {len(outputs)} outputs")
    for i, (model, output) in enumerate(zip(models, outputs, strict=True)):
        reset_global_state(threads)
        start = time.perf_counter()
        yield model, output
        log.info(
            "model %d/%d %s -> %s in %.1fs", i + 1, len(models), model, output, time.perf_counter() - start
        )
