"""The demo's reproduction (`make reproduce`): the numbers of a finished `make demo` in results/demo/,
asserted against tests/expected/demo/ (README's "Results of the embedded default"): every LDS within
the printed digits, the planted check passing, agreement and Shapley LDS above their floors."""

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.workflow_helpers import ROOT, planned_jobs

pytestmark = pytest.mark.reproduce

OUT = ROOT / "results" / "demo"
EXPECTED = ROOT / "tests" / "expected" / "demo"
PRINTED = 0.0005  # README prints 3 decimals


@pytest.fixture(scope="module")
def demo() -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    if not (OUT / "report" / "index.html").is_file():
        pytest.fail(f"no finished demo in {OUT}: run `make demo` first (make reproduce does)")
    return config


def test_the_demo_is_complete(demo):
    assert planned_jobs(ROOT) == {}, "make demo left jobs to do"


def test_every_lds_reproduces_to_the_printed_digits(demo):
    got = pd.read_csv(OUT / "metrics" / "lds.csv").set_index(["method", "split"])
    expected = pd.read_csv(EXPECTED / "lds.csv").set_index(["method", "split"])
    splits = {
        m: ("gen",) if spec["kind"] == "journey_trak" else ("val", "gen")
        for m, spec in demo["methods"].items()
    }
    assert sorted(got.index) == sorted(expected.index) == sorted((m, s) for m in splits for s in splits[m])
    intervals = [f"{over}_ci_{end}" for over in ("subsets", "targets") for end in ("low", "high")]
    measured = ["lds", *intervals]
    for column in measured:
        diff = (got.loc[expected.index, column] - expected[column]).abs()
        assert (diff <= PRINTED + 1e-9).all(), f"{column}:\n{diff[diff > PRINTED]}"
    damped = expected["lambda"].notna()
    np.testing.assert_allclose(got.loc[expected.index[damped], "lambda"], expected.loc[damped, "lambda"])


def test_planted_contributors_are_found_at_the_bottom(demo):
    floors = yaml.safe_load((EXPECTED / "shapley.yaml").read_text())
    planted = pd.read_csv(OUT / "shapley" / "metrics" / "planted.csv").set_index(["estimator", "how"])
    for how, precision in floors["planted_precision"].items():
        assert planted.loc[("kernelshap", how), "precision_at_k"] == precision, planted


def test_sparse_fine_tuning_agrees_with_retraining_and_predicts_held_out_coalitions(demo):
    floors = yaml.safe_load((EXPECTED / "shapley.yaml").read_text())
    metrics = OUT / "shapley" / "metrics"
    agreement = pd.read_csv(metrics / "agreement.csv").set_index(["estimator", "how", "method"])
    pearson = agreement.loc[("kernelshap", "sparse_ft", "pearson")]
    assert pearson["r"] >= floors["agreement_floor"]["r"], pearson
    assert pearson["ci_low"] > floors["agreement_floor"]["ci_low"], pearson
    lds = pd.read_csv(metrics / "shapley_lds.csv").set_index(["estimator", "how"])
    for how, floor in floors["shapley_lds_floor"].items():
        assert lds.loc[("kernelshap", how), "lds"] >= floor, lds
