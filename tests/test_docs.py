"""README's measured tables agree with the committed files they come from."""

import pandas as pd
import pytest

from benchmarks.test_durations import BEGIN, END, SAVED, table
from tests.workflow_helpers import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_lds_table_is_the_demo_expected_by_make_reproduce():
    expected = pd.read_csv(ROOT / "tests" / "expected" / "demo" / "lds.csv")
    rows = {line for line in README.splitlines() if line.startswith("| ")}
    for method, group in expected.groupby("method"):
        cells = {
            split: f"{row.lds:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
            for split, row in group.set_index("split").iterrows()
        }
        assert any(f"| {cells['val']} | {cells['gen']} |" in row for row in rows), (method, cells)


def test_readme_test_durations_table_is_rendered_from_the_committed_durations():
    if not SAVED.is_file():
        pytest.fail(f"{SAVED} is missing: run `python benchmarks/test_durations.py test-durations.txt`")
    rendered = README.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert rendered == table(SAVED.read_text()).strip()
