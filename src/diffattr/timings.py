"""Stage timings from Snakemake's benchmark files: `python -m diffattr.timings results/<experiment>`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from diffattr.runtime import STARTUP

COLUMNS = ["stage", "jobs", "total_s", "longest_s", "cpu_s", "startup_s", "startup_share", "peak_rss_mb"]
_STARTUP_LINE = re.compile(rf"{STARTUP}: ([0-9.]+) s wall")


def job_startup(log_file: Path) -> float:
    """Wall seconds a job spent starting (interpreter, imports) as its log records it; 0 if it does not."""
    if not log_file.is_file():
        return 0.0
    with log_file.open(errors="replace") as fh:
        for line in fh:
            match = _STARTUP_LINE.search(line)
            if match:
                return float(match.group(1))
    return 0.0


def stage_timings(benchmarks: str | Path) -> pd.DataFrame:
    """Per rule: jobs, summed and longest job wall time (s), summed CPU time (s), summed start-up wall
    time (s, from the jobs' logs beside the benchmarks) and its share of the job time, peak memory (MB)."""
    benchmarks = Path(benchmarks)
    logs = benchmarks.parent / "logs"
    rows = []
    for path in sorted(benchmarks.glob("*/*.tsv")):
        bench = pd.read_csv(path, sep="\t")
        rows.append(
            {
                "stage": path.parent.name,
                "s": float(bench["s"].iloc[0]),
                "cpu_s": float(
                    pd.to_numeric(bench.get("cpu_time", pd.Series([0.0])), errors="coerce").iloc[0]
                ),
                "startup_s": job_startup(logs / path.parent.name / f"{path.stem}.log"),
                "max_rss_mb": float(pd.to_numeric(bench["max_rss"], errors="coerce").iloc[0]),
            }
        )
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    frame = (
        pd.DataFrame(rows)
        .groupby("stage", sort=False)
        .agg(
            jobs=("s", "size"),
            total_s=("s", "sum"),
            longest_s=("s", "max"),
            cpu_s=("cpu_s", "sum"),
            startup_s=("startup_s", "sum"),
            peak_rss_mb=("max_rss_mb", "max"),
        )
        .reset_index()
    )
    frame["startup_share"] = (frame["startup_s"] / frame["total_s"]).where(frame["total_s"] > 0, 0.0)
    return frame[COLUMNS].round(
        {"total_s": 1, "longest_s": 1, "cpu_s": 1, "startup_s": 1, "startup_share": 2, "peak_rss_mb": 1}
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m diffattr.timings results/<experiment>", file=sys.stderr)
        return 2
    table = stage_timings(Path(argv[0]) / "benchmarks")
    print(f"Stage timings (job seconds, summed over jobs) in {argv[0]}:")
    print(table.to_string(index=False))
    total, startup = table["total_s"].sum(), table["startup_s"].sum()
    print(
        f"total job time: {total:.0f} s ({table['jobs'].sum()} jobs, CPU {table['cpu_s'].sum():.0f} s),"
        f" of which start-up {startup:.0f} s ({startup / total if total else 0:.0%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
