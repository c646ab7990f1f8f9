"""The embedded default, end to end, exactly as `make demo` runs it (about half an hour on two cores)."""

import pandas as pd
import pytest

from tests.workflow_helpers import make_workspace, planned_jobs, snakemake


@pytest.mark.e2e
def test_embedded_default_end_to_end(tmp_path):
    workdir = make_workspace(tmp_path)
    snakemake(workdir, "--cores", "2", timeout=4800)
    out = workdir / "results" / "demo"
    lds = pd.read_csv(out / "metrics" / "lds.csv").set_index(["method", "split"])
    assert sorted(lds.index) == sorted((m, s) for m in ("TRAK", "D-TRAK", "pixel") for s in ("val", "gen"))
    for method in ("TRAK", "D-TRAK"):
        assert lds.loc[(method, "val"), "ci_low"] > 0, lds
        assert lds.loc[(method, "val"), "lambda"] > 0
    assert (lds["n_subsets"] == 32).all()
    assert (out / "report" / "figures" / "lds.png").stat().st_size > 10_000
    assert "D-TRAK" in (out / "report" / "index.html").read_text()

    shapley = out / "shapley"
    values = pd.read_csv(shapley / "values" / "kernelshap-sparse_ft.csv")
    assert values["name"].tolist() == [f"class {c}" for c in range(10)]
    agreement = pd.read_csv(shapley / "metrics" / "agreement.csv").set_index(["estimator", "method"])
    assert agreement.loc[("kernelshap", "pearson"), "r"] > 0.5, agreement
    cost = pd.read_csv(shapley / "metrics" / "cost.csv").set_index("how")
    assert cost.loc["sparse_ft", "speedup_per_model"] > 2, cost
    lds_shapley = pd.read_csv(shapley / "metrics" / "shapley_lds.csv").set_index(["estimator", "how"])
    assert lds_shapley.loc[("kernelshap", "sparse_ft"), "lds"] > 0, lds_shapley
    assert (out / "report" / "figures" / "values.png").stat().st_size > 10_000
    assert "Contributor values" in (out / "report" / "index.html").read_text()
    assert planned_jobs(workdir) == {}
