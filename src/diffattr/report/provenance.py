"""Sections about the run itself: stage timings, and the config and provenance of every figure and table."""

from __future__ import annotations

import hashlib
import html
import json
import subprocess
from pathlib import Path

import pandas as pd
import yaml

from diffattr.report.page import Report, Section
from diffattr.timings import stage_timings


def branch_timings(benchmarks: str | Path, branches: dict[str, str]) -> dict[str, pd.DataFrame]:
    """Stage timings (diffattr.timings) split by branch: `branches` maps a stage (a benchmark folder) to
    its branch; stages it does not name (the report's own) are left out, and without any mapping every
    stage is in one table "all stages". Each table ends with a total row."""
    table = stage_timings(benchmarks)
    grouped = {}
    branch_of = table["stage"].map(lambda s: branches.get(s) if branches else "all stages")
    for branch in dict.fromkeys([*branches.values()] or ["all stages"]):
        part = table[branch_of == branch]
        if part.empty:
            continue
        total = {
            "stage": "total",
            "jobs": part["jobs"].sum(),
            "total_s": round(part["total_s"].sum(), 1),
            "longest_s": part["longest_s"].max(),
            "peak_rss_mb": part["peak_rss_mb"].max(),
        }
        grouped[branch] = pd.concat([part, pd.DataFrame([total])], ignore_index=True)
    return grouped


def timings_section(report: Report) -> Section | None:
    """Job time per stage from the benchmark files, one table per branch."""
    benchmarks = report.settings.get("benchmarks")
    if benchmarks is None or not Path(benchmarks).is_dir():
        return None
    tables = branch_timings(benchmarks, report.settings.get("branches", {}))
    if not tables:
        return None
    parts = [
        "<p>Seconds of job time per stage (summed over its jobs, from Snakemake's benchmark files), the"
        " longest job and the peak memory; wall time is less when jobs run in parallel. This report's own"
        " job is not counted.</p>"
    ]
    for branch, table in tables.items():
        parts.append(f"<h3>{html.escape(branch)}</h3>\n{report.table(table, [str(benchmarks)], decimals=1)}")
    return Section("timings", "Stage timings", "\n".join(parts))


def git_commit(folder: str | Path) -> str:
    """The commit of the git checkout holding `folder`, marked when it has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes)" if dirty else head


def config_hash(config: dict) -> str:
    """A short SHA-256 of the config as canonical JSON: equal hashes, equal configs."""
    canonical = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def provenance_section(report: Report) -> Section:
    """Git commit, config hash, which files each figure and table came from, and the config itself."""
    source = report.settings.get("source")
    rows = [
        ("experiment", report.config.get("experiment", "")),
        ("git commit", git_commit(source) if source else "unknown"),
        ("config hash (SHA-256 of the canonical JSON)", config_hash(report.config)),
    ]
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    made = "".join(
        f"<li><strong>{html.escape(what)}</strong>: "
        + ", ".join(f"<code>{html.escape(s)}</code>" for s in sources)
        + "</li>"
        for what, sources in report.provenance
    )
    inputs = sorted(
        {
            str(v)
            for value in report.inputs.values()
            for v in (value if isinstance(value, list | tuple) else [value])
        }
    )
    listed = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in inputs)
    body = f"""<div class="table-box"><table class="facts">{facts}</table></div>
<h3>Where each figure and table came from</h3>
<ul>{made}</ul>
<h3>Every input of this report</h3>
<div class="table-box"><ul>{listed}</ul></div>
<h3>Config</h3>
<pre>{html.escape(yaml.safe_dump(report.config, sort_keys=False))}</pre>"""
    return Section("provenance", "Config and provenance", body)
