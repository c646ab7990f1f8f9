"""README's measured tables agree with the committed files they come from."""

import pandas as pd
import pytest

from benchmarks.test_durations import BEGIN, END, SAVED, table
from tests.workflow_helpers import ROOT

README = (ROOT / "README.md").read_text()


INTERVALS = ("subsets", "targets")


def lds_cell(row: pd.Series) -> str:
    """README's cell of one split: the LDS, then its CI over subsets (when the expected file holds it),
    then its CI over targets, e.g. `0.602 [0.580, 0.621] [0.561, 0.637]`."""
    intervals = [
        f"[{row[f'{over}_ci_low']:.3f}, {row[f'{over}_ci_high']:.3f}]"
        for over in INTERVALS
        if f"{over}_ci_low" in row
    ]
    return " ".join([f"{row['lds']:.3f}", *intervals])


def test_readme_lds_table_is_the_demo_expected_by_make_reproduce():
    expected = pd.read_csv(ROOT / "tests" / "expected" / "demo" / "lds.csv")
    lines = README.splitlines()
    rows = {line for line in lines if line.startswith("| ")}
    for method, group in expected.groupby("method"):
        cells = {split: lds_cell(row) for split, row in group.set_index("split").iterrows()}
        assert any(f"| {cells['val']} | {cells['gen']} |" in row for row in rows), (method, cells)
    if "subsets_ci_low" in expected:  # two intervals a cell: the header says which is which
        header = next(line for line in lines if line.startswith("| method | val LDS"))
        assert "over subsets" in header and "over targets" in header, header


def test_readme_test_durations_table_is_rendered_from_the_committed_durations():
    if not SAVED.is_file():
        pytest.fail(f"{SAVED} is missing: run `python benchmarks/test_durations.py test-durations.txt`")
    rendered = README.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert rendered == table(SAVED.read_text()).strip()
