"""The test suite's slowest tests, from the durations that `make test` writes (test-durations.txt):

    python benchmarks/test_durations.py test-durations.txt

copies the file to benchmarks/results/test-durations.txt and renders docs/testing.md's table of the
slowest tests from it (docs/render.py, `make docs`), with the suite's total and the tests over the
4-minute budget of one test."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAVED = ROOT / "benchmarks" / "results" / "test-durations.txt"
BUDGET_S = 240
SHOWN = 12


def read_durations(text: str) -> dict[str, float]:
    """Test id -> seconds of setup + call + teardown, from pytest's `--durations=0` lines."""
    seconds: dict[str, float] = {}
    for value, test in re.findall(r"^([\d.]+)s (?:setup|call|teardown) +(.+?)\s*$", text, re.MULTILINE):
        seconds[test] = seconds.get(test, 0.0) + float(value)
    return seconds


def summary_line(text: str) -> str:
    """pytest's closing line, e.g. '330 passed, 1 skipped in 1100.00s (0:18:20)'."""
    lines = re.findall(r"^=*\s*(\d+ (?:failed|passed).*? in [\d.]+s.*?)\s*=*$", text, re.MULTILINE)
    return lines[-1] if lines else "no closing line"


def table(text: str) -> str:
    seconds = read_durations(text)
    slowest = sorted(seconds.items(), key=lambda item: -item[1])[:SHOWN]
    over = [test for test, s in seconds.items() if s > BUDGET_S]
    rows = ["| test | s |", "|---|---|"]
    rows += [f"| `{test.removeprefix('tests/')}` | {s:,.0f} |" for test, s in slowest]
    return "\n".join(
        [
            f"From `benchmarks/results/test-durations.txt` ({summary_line(text)}; {len(seconds)} tests, "
            f"{sum(seconds.values()) / 60:.0f} min of worker time; over the "
            f"{BUDGET_S // 60}-minute budget of one test: {', '.join(over) if over else 'none'}):",
            "",
            *rows,
        ]
    )


def main(path: str) -> None:
    if Path(path).resolve() != SAVED:
        shutil.copyfile(path, SAVED)
    subprocess.run([sys.executable, str(ROOT / "docs" / "render.py")], check=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "test-durations.txt")
