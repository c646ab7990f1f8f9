"""Every preset's dry run on config.yaml: its jobs, how many ask for a GPU, and the GPU-hours those request
(the sum of their time limits from the config's `resources:`: what a cluster reserves at most, not a
measurement) -> benchmarks/results/presets.csv, which docs/render.py turns into README's table.

    python benchmarks/preset_plans.py        # about a minute per preset on 2 cores
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SAVED = ROOT / "benchmarks" / "results" / "presets.csv"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile")]
JOB = re.compile(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", re.MULTILINE)


def plan(preset: Path) -> dict:
    """Jobs, GPU jobs and requested GPU-hours of one preset's dry run from nothing."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(ROOT / "config.yaml", folder)
        run = subprocess.run(
            [*SNAKEMAKE, "-d", folder, "-n", "--configfile", str(preset)],
            capture_output=True,
            text=True,
            check=True,
        )
    output = run.stdout + run.stderr
    jobs = int(re.search(r"^total\s+(\d+)$", output, re.MULTILINE).group(1))
    minutes = [
        int(re.search(r"runtime=(\d+)", resources).group(1))
        for _, resources in JOB.findall(output)
        if re.search(r"\bgpu=1\b", resources)
    ]
    return {
        "preset": preset.stem,
        "jobs": jobs,
        "gpu_jobs": len(minutes),
        "gpu_hours_requested": round(sum(minutes) / 60),
    }


def main() -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    rows = [plan(preset) for preset in sorted((ROOT / "experiments").glob("*.yaml"))]
    pd.DataFrame(rows).assign(commit=commit).to_csv(SAVED, index=False)
    print(f"wrote {SAVED}")


if __name__ == "__main__":
    main()
