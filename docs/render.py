"""Renders the measured and generated parts of README.md and docs/ from the committed files they come from:

    python docs/render.py          # rewrite them (make docs)
    python docs/render.py --check  # exit 1, naming each part that differs from its file (tests/test_docs.py)

Each part sits between `<!-- NAME: begin -->` and `<!-- NAME: end -->` markers, or is a whole page
(docs/configuration.md, from the config schema).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.test_durations import SAVED as DURATIONS  # noqa: E402
from benchmarks.test_durations import table as durations_table  # noqa: E402

EXPECTED_LDS = ROOT / "tests" / "expected" / "demo" / "lds.csv"
DEMO_METRICS = ROOT / "benchmarks" / "results" / "demo"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def lds_cell(row: pd.Series | None) -> str:
    """`0.602 [0.580, 0.621] [0.561, 0.637]`: the LDS, its interval over subsets, then over targets."""
    if row is None:
        return "-"
    intervals = [
        f"[{row[f'{over}_ci_low']:.3f}, {row[f'{over}_ci_high']:.3f}]"
        for over in ("subsets", "targets")
        if f"{over}_ci_low" in row
    ]
    return " ".join([f"{row['lds']:.3f}", *intervals])


def demo_lds() -> str:
    """The demo's LDS table in config.yaml's method order, from tests/expected/demo/lds.csv."""
    return lds_table(pd.read_csv(EXPECTED_LDS))


def lds_table(expected: pd.DataFrame) -> str:
    """A markdown table of an lds.csv: a row per method, a cell per split."""
    order = list(yaml.safe_load((ROOT / "config.yaml").read_text())["methods"])
    methods = sorted(set(expected["method"]), key=lambda m: (order.index(m) if m in order else len(order), m))
    header = "LDS [CI over subsets] [CI over targets]"
    rows = [f"| method | val {header} | gen {header} | damping chosen (val / gen) |", "|---|---|---|---|"]
    for method in methods:
        by_split = {r["split"]: r for _, r in expected[expected["method"] == method].iterrows()}
        dampings = [by_split[s]["lambda"] if s in by_split else None for s in ("val", "gen")]
        damping = (
            " / ".join("-" if lam is None or pd.isna(lam) else f"{lam:g}" for lam in dampings)
            if any(lam is not None and not pd.isna(lam) for lam in dampings)
            else "-"
        )
        cells = [lds_cell(by_split.get(split)) for split in ("val", "gen")]
        rows.append(f"| {method} | {cells[0]} | {cells[1]} | {damping} |")
    return "\n".join(rows)


def demo_contributors() -> str:
    """The contributor branch's headline numbers, from the committed copy of the demo's shapley metrics."""
    planted = pd.read_csv(DEMO_METRICS / "planted.csv")
    agreement = pd.read_csv(DEMO_METRICS / "agreement.csv")
    shapley_lds = pd.read_csv(DEMO_METRICS / "shapley_lds.csv")
    way = {"sparse_ft": "sparsified fine-tuning", "retrain": "retraining"}
    rows = ["| measure | value [95% CI] |", "|---|---|"]
    for _, r in planted.iterrows():
        rows.append(
            f"| planted check by {way[r['how']]}: ranks of {r['planted']} from the bottom "
            f"| {r['ranks_from_bottom']} (precision at {r['k']}: {r['precision_at_k']:.2f}) |"
        )
    for _, r in agreement.iterrows():
        rows.append(
            f"| agreement of {way[r['how']]} with {way[r['versus']]}, {r['method'].capitalize()} "
            f"| {r['r']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] |"
        )
    for _, r in shapley_lds.iterrows():
        rows.append(
            f"| Shapley LDS by {way[r['how']]}, {r['coalitions']} held-out coalitions "
            f"| {r['lds']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] |"
        )
    return "\n".join(rows)


def demo_counterfactual() -> str:
    """The demo's counterfactual distances per method, from the committed copy of its summary."""
    summary = pd.read_csv(DEMO_METRICS / "counterfactual_summary.csv")
    rows = ["| removed by | targets | pixel L2 [95% CI over targets] |", "|---|---|---|"]
    rows += [
        f"| {r['method']} | {r['n_targets']} | {r['pixel_l2']:.2f} [{r['pixel_l2_ci_low']:.2f}, "
        f"{r['pixel_l2_ci_high']:.2f}] |"
        for _, r in summary.iterrows()
    ]
    return "\n".join(rows)


def demo_all_methods() -> str:
    """The LDS of the methods of experiments/demo-all-methods.yaml, from the committed copy of that run."""
    return lds_table(pd.read_csv(ROOT / "benchmarks" / "results" / "demo-all-methods" / "lds.csv"))


def demo_timings() -> str:
    """The demo's stage timings as `make demo` printed them, from their committed copy."""
    return "```\n" + (DEMO_METRICS / "timings.txt").read_text().strip() + "\n```"


def preset_plans() -> str:
    """Each preset's jobs and the GPU-hours they reserve, from benchmarks/results/presets.csv."""
    plans = pd.read_csv(ROOT / "benchmarks" / "results" / "presets.csv")
    rows = ["| preset | jobs | GPU jobs | GPU-hours reserved |", "|---|---|---|---|"]
    for plan in plans.itertuples():
        if plan.preset.startswith("demo-"):  # variants of the demo, which runs on CPU (make demo)
            rows.append(f"| `{plan.preset}` | {plan.jobs:,} | - (CPU) | - |")
        else:
            rows.append(
                f"| `{plan.preset}` | {plan.jobs:,} | {plan.gpu_jobs:,} | {plan.gpu_hours_requested:,} |"
            )
    commit = plans["commit"].iloc[0]
    return "\n".join(rows) + (
        f"\n\n(Dry runs at commit {commit}, `python benchmarks/preset_plans.py`. GPU-hours reserved: the sum"
        " of the GPU jobs' time limits from `config.yaml`'s `resources:`, what a cluster holds at most, not"
        " a measurement.)"
    )


def featurize_benchmark() -> str:
    """The featurization benchmark's table, as `make bench` wrote it to benchmarks/results/featurize.md."""
    text = (ROOT / "benchmarks" / "results" / "featurize.md").read_text()
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


def test_durations() -> str:
    return durations_table(DURATIONS.read_text())


def configuration() -> str:
    """docs/configuration.md: every key of the config schema with its type, default and meaning."""
    schema = yaml.safe_load(SCHEMA.read_text())
    lines = [
        "# Configuration",
        "",
        "Every key of `config.yaml` and of the presets in `experiments/`, generated from",
        "`workflow/schemas/config.schema.yaml` by `make docs` (a test fails when this page and the schema",
        "disagree). A wrong key, type or value stops a run before any job with one line naming the key.",
        "",
    ]
    for key, spec in schema["properties"].items():
        lines += [f"## `{key}`", ""]
        is_section = spec.get("type") == "object"
        if is_section and spec.get("description"):
            lines += [_cell(spec["description"]), ""]
        rows = list(_keys(spec, key)) if is_section else [(key, spec)]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [
            f"| `{path}` | {_type(s)} | {_default(s)} | {_cell(s.get('description', ''))} |"
            for path, s in rows
            if s.get("type") != "object" or not s.get("properties")
        ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _keys(spec: dict, prefix: str):
    for name, sub in (spec.get("properties") or {}).items():
        path = f"{prefix}.{name}"
        if sub.get("type") == "object" and sub.get("properties"):
            yield from _keys(sub, path)
        else:
            yield path, sub
    extra = spec.get("additionalProperties")
    if isinstance(extra, dict):
        if extra.get("type") == "object" and extra.get("properties"):
            yield from _keys(extra, f"{prefix}.NAME")
        else:
            yield f"{prefix}.NAME", extra


def _type(spec: dict) -> str:
    if "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec["enum"])
    kind = spec.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and isinstance(spec.get("items"), dict):
        return f"array of {_type(spec['items'])}"
    return kind


def _default(spec: dict) -> str:
    return f"`{json.dumps(spec['default'])}`" if "default" in spec else "-"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# (file, marker or None for the whole file, renderer)
PARTS: list[tuple[Path, str | None, Callable[[], str]]] = [
    (ROOT / "README.md", "demo-lds", demo_lds),
    (ROOT / "README.md", "demo-all-methods", demo_all_methods),
    (ROOT / "README.md", "demo-contributors", demo_contributors),
    (ROOT / "README.md", "preset-plans", preset_plans),
    (ROOT / "docs" / "results.md", "demo-lds", demo_lds),
    (ROOT / "docs" / "results.md", "demo-counterfactual", demo_counterfactual),
    (ROOT / "docs" / "results.md", "demo-all-methods", demo_all_methods),
    (ROOT / "docs" / "testing.md", "test-durations", test_durations),
    (ROOT / "docs" / "performance.md", "demo-timings", demo_timings),
    (ROOT / "docs" / "performance.md", "featurize", featurize_benchmark),
    (ROOT / "docs" / "configuration.md", None, configuration),
]


def rendered(path: Path, marker: str | None, render: Callable[[], str]) -> str:
    """The file's text with the part rendered anew."""
    if marker is None:
        return render()
    text = path.read_text()
    begin, end = f"<!-- {marker}: begin -->", f"<!-- {marker}: end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{path.relative_to(ROOT)} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{render()}\n{end}{rest.split(end, 1)[1]}"


def stale_parts() -> list[str]:
    """The parts whose file differs from what their source renders."""
    stale = []
    for path, marker, render in PARTS:
        current = path.read_text() if path.exists() else ""
        if rendered(path, marker, render) != current:
            stale.append(f"{path.relative_to(ROOT)} ({marker or 'whole page'})")
    return stale


def main(check: bool) -> None:
    if check:
        stale = stale_parts()
        if stale:
            sys.exit("out of date with their files (run `make docs`): " + ", ".join(stale))
        return
    for path, marker, render in PARTS:
        path.write_text(rendered(path, marker, render))


if __name__ == "__main__":
    main("--check" in sys.argv[1:])
