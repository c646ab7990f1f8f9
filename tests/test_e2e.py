"""The embedded default, end to end, exactly as `make demo` runs it (about ten minutes on two cores)."""

import pandas as pd
import pytest

from tests.workflow_helpers import make_workspace, planned_jobs, snakemake


@pytest.mark.e2e
def test_embedded_default_end_to_end(tmp_path):
    workdir = make_workspace(tmp_path)
    snakemake(workdir, "--cores", "2", timeout=3600)
    out = workdir / "results" / "demo"
    lds = pd.read_csv(out / "metrics" / "lds.csv").set_index(["method", "split"])
    assert sorted(lds.index) == sorted((m, s) for m in ("TRAK", "D-TRAK", "pixel") for s in ("val", "gen"))
    for method in ("TRAK", "D-TRAK"):
        assert lds.loc[(method, "val"), "ci_low"] > 0, lds
        assert lds.loc[(method, "val"), "lambda"] > 0
    assert (lds["n_subsets"] == 32).all()
    assert (out / "report" / "figures" / "lds.png").stat().st_size > 10_000
    assert "D-TRAK" in (out / "report" / "index.html").read_text()
    assert planned_jobs(workdir) == {}
