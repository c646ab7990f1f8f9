"""The embedded default, end to end, exactly as `make demo` runs it (about half an hour on two cores).

It checks that every answer the demo promises is there and well-formed; the values themselves are
measured and reported in README ("Results of the embedded default"), not asserted here, except where a
wrong sign would mean a broken pipeline (TRAK and D-TRAK above zero on validation targets, sparsified
fine-tuning cheaper than retraining)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.workflow_helpers import ROOT, make_workspace, planned_jobs, snakemake


@pytest.mark.e2e
def test_embedded_default_end_to_end(tmp_path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    workdir = make_workspace(tmp_path)
    snakemake(workdir, "--cores", "2", timeout=4800)
    out = workdir / "results" / "demo"
    lds = pd.read_csv(out / "metrics" / "lds.csv").set_index(["method", "split"])
    assert sorted(lds.index) == sorted((m, s) for m in config["methods"] for s in ("val", "gen"))
    for method in ("TRAK", "D-TRAK"):
        assert lds.loc[(method, "val"), "ci_low"] > 0, lds
        assert lds.loc[(method, "val"), "lambda"] > 0
    assert (lds["n_subsets"] == config["lds"]["num_subsets"]).all()
    dominating = pd.read_csv(out / "metrics" / "dominating_norm.csv")
    assert set(config["methods"]) <= set(dominating["method"])
    counterfactual = pd.read_csv(out / "metrics" / "counterfactual.csv")
    cf = config["counterfactual"]
    assert len(counterfactual) == cf["num_targets"] * (len(cf["methods"]) + 1)
    assert (counterfactual["pixel_l2"] > 0).all(), counterfactual  # removing images changes each target
    assert (out / "report" / "figures" / "lds.png").stat().st_size > 10_000

    shapley = out / "shapley"
    values = pd.read_csv(shapley / "values" / "kernelshap-sparse_ft.csv")
    assert values["name"].tolist() == [f"class {c}" for c in range(10)]
    planted = pd.read_csv(shapley / "metrics" / "planted.csv")
    assert {"sparse_ft", "retrain"} <= set(planted["how"])
    agreement = pd.read_csv(shapley / "metrics" / "agreement.csv").set_index(["estimator", "method"])
    assert np.isfinite(agreement.loc[("kernelshap", "pearson"), "r"]), agreement
    cost = pd.read_csv(shapley / "metrics" / "cost.csv").set_index("how")
    assert cost.loc["sparse_ft", "speedup_per_model"] > 2, cost
    lds_shapley = pd.read_csv(shapley / "metrics" / "shapley_lds.csv").set_index(["estimator", "how"])
    assert ("kernelshap", "sparse_ft") in lds_shapley.index, lds_shapley
    assert (out / "report" / "figures" / "values.png").stat().st_size > 10_000
    page = (out / "report" / "index.html").read_text()
    for section in ("D-TRAK", "Contributor values", "planted"):
        assert section in page, section
    assert planned_jobs(workdir) == {}
