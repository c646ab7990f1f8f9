"""Stage timings from Snakemake's benchmark files: `python -m diffattr.timings results/<experiment>`."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def stage_timings(benchmarks: str | Path) -> pd.DataFrame:
    """Per rule: jobs, summed and longest job wall time (s), peak memory (MB)."""
    rows = []
    for path in sorted(Path(benchmarks).glob("*/*.tsv")):
        bench = pd.read_csv(path, sep="\t")
        rows.append(
            {
                "stage": path.parent.name,
                "s": float(bench["s"].iloc[0]),
                "max_rss_mb": float(pd.to_numeric(bench["max_rss"], errors="coerce").iloc[0]),
            }
        )
    if not rows:
        return pd.DataFrame(columns=["stage", "jobs", "total_s", "longest_s", "peak_rss_mb"])
    frame = pd.DataFrame(rows)
    return (
        frame.groupby("stage", sort=False)
        .agg(
            jobs=("s", "size"),
            total_s=("s", "sum"),
            longest_s=("s", "max"),
            peak_rss_mb=("max_rss_mb", "max"),
        )
        .reset_index()
        .round(1)
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m diffattr.timings results/<experiment>", file=sys.stderr)
        return 2
    table = stage_timings(Path(argv[0]) / "benchmarks")
    print(f"Stage timings (job seconds, summed over jobs) in {argv[0]}:")
    print(table.to_string(index=False))
    print(f"total job time: {table['total_s'].sum():.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
