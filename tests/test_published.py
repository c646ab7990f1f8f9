"""The papers' published values appear beside ours exactly for the presets that follow their protocols."""

import pandas as pd
import pytest

from diffattr.config import validate
from diffattr.report import build_report
from diffattr.report.published import (
    agreement_beside_published,
    contributor_protocol,
    lds_beside_published,
    lds_protocol,
    published_values,
)
from tests.test_presets import PRESETS, toy_scale
from tests.workflow_helpers import ROOT, layered_config

CONFIGS = {p.stem: validate(layered_config(p)) for p in PRESETS}
PROTOCOLS = {  # the presets that follow a paper's protocol; every other follows none
    "cifar2-lds": ("d-trak-cifar2", None),
    "cifar20-shapley": (None, "lu-cifar20"),
    "celebahq-ldm-shapley": (None, "lu-celebahq"),
    "artbench-lora-shapley": (None, "lu-artbench"),
}


@pytest.mark.parametrize("preset", sorted(CONFIGS))
def test_each_preset_follows_the_protocol_it_reproduces_and_no_other(preset):
    config = CONFIGS[preset]
    assert (lds_protocol(config), contributor_protocol(config)) == PROTOCOLS.get(preset, (None, None))
    # at toy scale (make test) no preset follows a protocol: its sizes are not the paper's
    assert lds_protocol(toy_scale(config)) is None


def test_the_reference_table_holds_the_papers_numbers():
    """A few values typed from the papers (REFERENCES.md), against the committed table."""
    table = published_values().fillna({"split": "", "output": ""})
    expected = {
        ("d-trak-cifar2", "val", "squared_norm", 10, 32768): 26.79,
        ("d-trak-cifar2", "gen", "loss", 100, 32768): 15.87,
        ("d-trak-cifar2", "val", "elbo", 1000, 4096): 13.19,
        ("d-trak-cifar2", "val", "mean", 10, 4096): 24.91,
    }
    for (protocol, split, output, timesteps, dim), value in expected.items():
        row = table[
            (table["protocol"] == protocol)
            & (table["split"] == split)
            & (table["output"] == output)
            & (table["timesteps"] == timesteps)
            & (table["dim"] == dim)
        ]
        assert row["value"].tolist() == [value]
    lu = table[table["protocol"].str.startswith("lu-")].set_index(["protocol", "finetune_steps"])["value"]
    assert lu.to_dict() == {
        ("lu-cifar20", 1000): 0.79,
        ("lu-cifar20", 3000): 0.95,
        ("lu-celebahq", 500): 0.63,
        ("lu-artbench", 200): 0.48,
    }
    assert table["source"].str.len().gt(10).all()


def test_cifar2_lds_shows_every_matching_method_beside_its_published_value():
    config = CONFIGS["cifar2-lds"]
    methods = list(config["methods"])
    lds = pd.DataFrame(
        [
            {"method": m, "split": s, "lds": 0.01 * i}
            for i, (m, s) in enumerate((m, s) for m in methods for s in ("val", "gen"))
        ]
    )
    beside = lds_beside_published(lds, config).set_index(["method", "split"])
    # D-TRAK at K = 100, k = 32,768 on validation targets: 33.74 in the D-TRAK results
    assert beside.loc[("D-TRAK-K100-k32768", "val"), "published (%)"] == 33.74
    ours = lds.set_index(["method", "split"]).loc[("D-TRAK-K100-k32768", "val"), "lds"]
    assert beside.loc[("D-TRAK-K100-k32768", "val"), "ours (%)"] == pytest.approx(100 * ours)
    # TRAK at K = 10, k = 4,096 on generated targets: Table 1 reports validation only
    assert ("TRAK", "val") in beside.index and ("TRAK", "gen") not in beside.index
    # ensembles and other kinds have no published row of this protocol
    assert not {m for m, _ in beside.index} - {m for m in methods if config["methods"][m]["kind"] == "trak"}
    assert not any("ensemble" in m for m, _ in beside.index)


def test_agreement_beside_lu_et_al_lists_their_step_counts():
    config = CONFIGS["cifar20-shapley"]
    agreement = pd.DataFrame(
        [
            {
                "estimator": "kernelshap",
                "how": "sparse_ft",
                "versus": "retrain",
                "method": "pearson",
                "r": 0.5,
            },
            {
                "estimator": "kernelshap",
                "how": "sparse_ft",
                "versus": "retrain",
                "method": "spearman",
                "r": 0.4,
            },
        ]
    )
    beside = agreement_beside_published(agreement, config)
    assert beside["published steps"].tolist() == [1000, 3000]
    assert beside["published (r)"].tolist() == [0.79, 0.95]
    assert set(beside["ours (r)"]) == {"0.500"} and set(beside["our steps"]) == {1000}
    assert agreement_beside_published(agreement, CONFIGS["artists-shapley"]).empty


def test_the_report_shows_published_values_only_for_a_published_protocol(tmp_path):
    lds = tmp_path / "lds.csv"
    row = {"method": "D-TRAK-K100-k32768", "split": "val", "lds": 0.3, "lambda": 0.1}
    bounds = {f"{over}_ci_{end}": 0.3 for over in ("subsets", "targets") for end in ("low", "high")}
    pd.DataFrame([{**row, **bounds}]).to_csv(lds, index=False)
    inputs = {"lds": str(lds)}
    settings = {"level": 0.95}
    page = tmp_path / "cifar2" / "index.html"
    build_report(page, inputs, settings, CONFIGS["cifar2-lds"])
    assert "Beside the published values" in page.read_text() and "33.74" in page.read_text()
    page = tmp_path / "demo" / "index.html"
    build_report(page, inputs, settings, validate(layered_config(ROOT / "config.yaml")))
    assert "Beside the published values" not in page.read_text()
