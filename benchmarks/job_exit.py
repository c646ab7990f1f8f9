"""CPU seconds of a job process that imports what a model job imports (diffattr's families, training and
gradients: torch, diffusers, accelerate) and ends:
by a normal interpreter exit, or by diffattr.runtime.finished (no teardown of the imported modules).
Each case runs `REPEATS` times in its own process, one at a time. Writes benchmarks/results/job_exit.csv.

    python benchmarks/job_exit.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REPEATS = 5
IMPORTS = (
    "from diffattr.families import load_model\nfrom diffattr.gradients import featurize\n"
    "from diffattr.training import train\nfrom diffattr.runtime import job\n"
)
CASES = {
    "interpreter exit": IMPORTS + "import logging\nlogging.getLogger('diffattr').info('work')\n",
    "runtime.finished": IMPORTS + "with job({log!r}):\n    pass\n",
}


def child_seconds(code: str) -> tuple[float, float]:
    """(wall, user + system CPU) seconds of `python -c code` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        log = str(Path(folder) / "job.log")
        for repeat in range(REPEATS):
            for case, code in CASES.items():
                wall, cpu = child_seconds(code.format(log=log))
                rows.append({"case": case, "repeat": repeat, "wall_s": wall, "cpu_s": cpu})
    frame = pd.DataFrame(rows).groupby("case", sort=False)[["wall_s", "cpu_s"]].median().round(2)
    frame["repeats"] = REPEATS
    frame["load_1min"] = round(os.getloadavg()[0], 2)
    frame["measured"] = time.strftime("%Y-%m-%d")
    frame.to_csv(RESULTS / "job_exit.csv")
    print(frame.to_string())


if __name__ == "__main__":
    main()
