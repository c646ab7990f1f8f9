"""The workflow as a user runs it: dry runs of the presets, config errors, partial reruns, killed jobs."""

import copy
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from diffattr.dominating import dominating_norm
from diffattr.store import read_arrays, read_npz
from tests.workflow_helpers import (
    PRESET_PLANS,
    ROOT,
    SNAKEMAKE,
    TINY,
    TINY_SHAPLEY,
    copy_workspace,
    deep_update,
    make_workspace,
    planned_jobs,
    planned_outputs,
    preset_jobs,
    snakemake,
    stage_jobs,
    stage_outputs,
)


@pytest.mark.xdist_group(PRESET_PLANS)
def test_cifar2_preset_dry_run_lists_the_paper_jobs():
    jobs = preset_jobs("cifar2-lds")
    assert jobs["train_lds"] == 64 * 3
    # the attributed model and the 2 other full models of D-TRAK-ensemble3-seeds; D-TRAK-ensemble3's 3
    # datamodel retrains: the 5 models other than the attributed one featurized on 14 shards each
    assert jobs["train_full"] == 3 and jobs["featurize_member"] == 5 * 14
    assert jobs["lds_outputs"] == 64 * 3
    # 10 featurizers x (10 train + 2 val + 2 generated shards of 500)
    assert jobs["featurize"] == 10 * 14
    assert jobs["trak_scores"] == 10 * 2 + 1 and jobs["pixel_scores"] == 2 and jobs["clip_scores"] == 2
    # 60 generated targets x (TRAK, D-TRAK, random); 64 datamodel retrains for 2 methods x 2 splits
    assert jobs["counterfactual_model"] == 60 * 3 and jobs["counterfactual"] == 1
    assert jobs["train_datamodel"] == jobs["datamodel_outputs"] == 64 and jobs["datamodel_scores"] == 4
    # TracIn's and ReTrac's featurizers at each of the 10 checkpoints: the train split at its training draws
    # and at the fixed timesteps (the -averaged kinds), and the targets; DAS residuals of its 2 featurizers
    assert jobs["featurize_checkpoint"] == 2 * 10 * (10 + 10 + 2 + 2) and jobs["das_residuals"] == 2
    assert jobs["local_scores"] == 8 * 2 and jobs["tracin_scores"] == 4 * 2
    assert jobs["dominating_norm"] == 1
    assert jobs["featurize_journey"] == 2 and jobs["generate"] == 1  # 1000 targets, shard 500
    # EK-FAC: factors fitted once on the trak featurizer, scores per target split
    assert jobs["ekfac_factors"] == 1 and jobs["ekfac_scores"] == 2


@pytest.mark.xdist_group(PRESET_PLANS)
def test_cifar20_shapley_preset_dry_run_lists_the_coalition_jobs():
    jobs = preset_jobs("cifar20-shapley")
    fit = 300 + 100 + 2  # KernelSHAP coalitions + the datamodel's own + empty + full, for each of the 4 ways
    retrained = 100 * 3 + 4 * 2 * 3 + 2  # held-out x seeds, top/bottom per way x seeds, full x other seeds
    assert jobs["coalition_model"] == 4 * fit + retrained
    assert jobs["coalition_property"] == jobs["coalition_model"]
    assert jobs["prune"] == 1 and jobs["shapley_values"] == 4 * 2
    assert "train_lds" not in jobs and "train_classifier" not in jobs  # LDS off; IS from Inception


@pytest.mark.xdist_group(PRESET_PLANS)
def test_image_folder_template_dry_run_values_artists():
    jobs = preset_jobs("artists-shapley")
    assert jobs["coalition_model"] == 2 * 402 + 100 * 3 + 2 * 2 * 3 + 2
    assert jobs["contributors"] == 1 and jobs["shapley_values"] == 2 * 2


def test_bad_config_stops_before_any_job_with_one_line(tmp_path):
    workdir = make_workspace(tmp_path, {"lds": {"alpha": 2}})
    result = snakemake(workdir, "-n", check=False)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("diffattr:")]
    assert lines == ["diffattr: config key 'lds.alpha': 2 is greater than or equal to the maximum of 1"]
    assert not (workdir / "results").exists()


def planned_after_change(workdir, config, change, planned=planned_jobs):
    """Jobs a dry run plans (`planned`: counts per rule, or outputs per job with planned_outputs) once
    `change` is deep-merged into `config`; the config is restored after."""
    make_workspace(workdir, deep_update(copy.deepcopy(config), change))
    try:
        return planned(workdir)
    finally:
        make_workspace(workdir, config)


@pytest.mark.slow
def test_tiny_run_writes_every_declared_output(tiny_run):
    out = tiny_run / "results" / "tiny"
    lds = pd.read_csv(out / "metrics" / "lds.csv")
    local = {"DAS", "DAS-leverage", "TracIn", "ReTrac", "relative-IF", "renormalized-IF", "grad-cosine"}
    assert {"TRAK", "D-TRAK", "pixel", *local} <= set(lds["method"]) and set(lds["split"]) == {"val", "gen"}
    assert {
        "method",
        "split",
        "lds",
        "subsets_ci_low",
        "subsets_ci_high",
        "targets_ci_low",
        "targets_ci_high",
        "lambda",
        "n_targets",
        "n_subsets",
    } <= set(lds)
    assert (lds["n_subsets"] == 4).all()
    subsets = read_npz(out / "subsets" / "lds.npz")
    dominating = pd.read_csv(out / "metrics" / "dominating_norm.csv")
    assert set(dominating["method"]) == set(lds["method"])
    for row in dominating.itertuples():  # each row is the diagnostic of its own method's and split's scores
        scores = read_arrays(out / "scores" / row.method / f"{row.split}.zarr", ["scores"])["scores"]
        again = dominating_norm(scores[~subsets[f"heldout_{row.split}"]], row.k)
        assert (row.distinct, row.most_frequent) == (again["distinct"], again["most_frequent"]), row
    figures = {p.name for p in (out / "report" / "figures").iterdir()}
    assert (out / "report" / "index.html").is_file() and {"lds.png", "top_attributions.png"} <= figures
    counterfactual = pd.read_csv(out / "metrics" / "counterfactual.csv")
    assert sorted(counterfactual["method"]) == ["D-TRAK", "random"]  # one target
    # every method removes exactly `remove` images; D-TRAK its best-scored ones, of which the table counts
    # the positive ones
    dtrak = read_arrays(out / "scores" / "D-TRAK" / "gen.zarr", ["scores"])["scores"]
    remove = TINY["counterfactual"]["remove"]
    for row in counterfactual.itertuples():
        assert row.removed == remove, row
        top = np.sort(dtrak[row.target])[::-1][:remove]
        assert row.removed_positive == (remove if row.method == "random" else int((top > 0).sum())), row
    assert (counterfactual["pixel_l2"] > 0).all(), counterfactual  # removing images changes each target
    assert "counterfactual.png" in figures
    page = (out / "report" / "index.html").read_text()
    for section in ("D-TRAK", "Counterfactual"):
        assert section in page, section
    assert not list(out.rglob(".*.tmp-*")), "a temporary output was left behind"
    assert planned_jobs(tiny_run) == {}


@pytest.mark.slow
def test_snakemakes_own_report_of_a_finished_run(tiny_run, tmp_path):
    snakemake(tiny_run, "--report", str(tmp_path / "report.html"))
    text = (tmp_path / "report.html").read_text()
    assert "top_attributions.png" in text and "lds.csv" in text


@pytest.mark.slow
def test_a_copied_workspace_is_up_to_date(tiny_run, tmp_path):
    assert planned_jobs(copy_workspace(tiny_run, tmp_path / "copy")) == {}


@pytest.mark.slow
def test_changing_gradient_timesteps_reruns_only_what_depends_on_them(tiny_run, tmp_path):
    workdir = copy_workspace(tiny_run, tmp_path / "copy")
    jobs = stage_jobs(planned_after_change(workdir, TINY, {"featurizers": {"trak": {"timesteps": 6}}}))
    rescored = {"trak_scores", "local_scores", "dominating_norm"}
    # Journey-TRAK's target features are the trak featurizer's output along the DDIM runs
    assert set(jobs) == {"featurize", "featurize_journey", *rescored, "lds", "report", "all"}
    # trak only: its 2 train + val + gen shards, in one job (featurize.shards_per_job); TRAK's 2 splits
    # and Journey-TRAK's gen rescored
    assert jobs["featurize"] == 1 and jobs["trak_scores"] == 2 + 1
    assert jobs["local_scores"] == 3 * 2  # relative-IF, renormalized-IF, grad-cosine reuse trak's gradients


@pytest.mark.slow
def test_killed_training_job_leaves_nothing_complete_and_rerun_redoes_only_it(tmp_path):
    workdir = make_workspace(tmp_path, {**TINY, "train": {"steps": 4000, "batch_size": 16}})
    target = "results/tiny/models/full/seed0"
    driver = subprocess.Popen(
        [*SNAKEMAKE, "-d", str(workdir), "--cores", "1", target],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log = workdir / "results/tiny/logs/train_full/seed0.log"
    deadline = time.time() + 300
    while time.time() < deadline and "step" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.5)
    assert "step" in log.read_text(), "training never started"
    os.killpg(driver.pid, signal.SIGKILL)  # the machine dies: driver and job at once
    driver.wait()
    assert not (workdir / target).exists()
    assert (workdir / "results/tiny/data/train.zarr").is_dir()
    assert planned_jobs(workdir, target) == {"train_full": 1}


@pytest.mark.slow
def test_tiny_shapley_run_writes_values_metrics_and_report(tiny_shapley_run):
    out = tiny_shapley_run / "results" / "tiny-shapley" / "shapley"
    table = pd.read_csv(out / "data" / "contributors.csv")
    assert table["name"].tolist() == ["class 0", "class 1", "class 2"] and table["images"].sum() == 30
    for estimator in ("kernelshap", "datamodel"):
        for how in ("sparse_ft", "retrain"):
            values = pd.read_csv(out / "values" / f"{estimator}-{how}.csv")
            assert len(values) == 3 and values[["value", "stderr"]].notna().all().all()
    lds = pd.read_csv(out / "metrics" / "shapley_lds.csv")
    assert len(lds) == 4 and (lds["coalitions"] == 3).all()
    cost = pd.read_csv(out / "metrics" / "cost.csv").set_index("how")
    assert cost.loc["retrain", "steps"] == 20 and cost.loc["sparse_ft", "steps"] == 5
    assert len(pd.read_csv(out / "metrics" / "agreement.csv")) == 2 * 2  # pearson + spearman per estimator
    planted = pd.read_csv(out / "metrics" / "planted.csv")
    assert sorted(zip(planted["estimator"], planted["how"], strict=True)) == sorted(
        (estimator, how) for estimator in ("kernelshap", "datamodel") for how in ("sparse_ft", "retrain")
    )
    assert (planted["planted"] == "class 2").all() and (planted["k"] == 1).all()
    # each row: the property of the model retrained without the top / bottom contributors of a ranking,
    # against the full model's (at this scale every model's precision may be 1: no change to assert)
    counterfactual = pd.read_csv(out / "metrics" / "counterfactual.csv")
    assert sorted(zip(counterfactual["ranked_by"], counterfactual["removed"], strict=True)) == sorted(
        (f"kernelshap-{how}", side) for how in ("sparse_ft", "retrain") for side in ("top", "bottom")
    )
    measured = {
        path.parent.name: json.loads(path.read_text())["value"]
        for path in (out / "properties" / "retrain").glob("*/seed0.json")
    }
    for row in counterfactual.itertuples():
        removed = f"{row.removed}-{row.ranked_by.removeprefix('kernelshap-')}"
        assert (row.value, row.full) == pytest.approx((measured[removed], measured["full"])), row
        assert row.change == pytest.approx(row.value - row.full), row
    # KernelSHAP's constrained solve: every way's values sum to v(full) - v(empty) of the retrained models
    for how in ("sparse_ft", "retrain"):
        total = pd.read_csv(out / "values" / f"kernelshap-{how}.csv")["value"].sum()
        assert total == pytest.approx(measured["full"] - measured["empty"], abs=1e-6), how
    report = tiny_shapley_run / "results" / "tiny-shapley" / "report"
    figures = {p.name for p in (report / "figures").iterdir()}
    assert {"values.png", "shapley_lds.png", "contributor_counterfactual.png"} <= figures
    page = (report / "index.html").read_text()
    for section in ("Contributor values", "planted"):
        assert section in page, section
    assert planned_jobs(tiny_shapley_run) == {}


@pytest.mark.parametrize("endpoints", ["retrain", "own"])
def test_every_way_takes_its_endpoints_from_retraining_or_its_own_models(endpoints, tmp_path):
    """shapley.endpoints: sparse FT's values are fitted with v(empty), v(full) of the retrained empty and
    full models (Lu et al.) or of its own; the planned job reads exactly those two properties."""
    config = deep_update(copy.deepcopy(TINY_SHAPLEY), {"shapley": {"endpoints": endpoints}})
    dry = snakemake(make_workspace(tmp_path, config), "-n").stdout
    job = re.search(r"rule shapley_values:\n    input: (.*)\n    output: \S*kernelshap-sparse_ft.csv", dry)
    inputs = job.group(1).split(", ")
    source = "retrain" if endpoints == "retrain" else "sparse_ft"
    for coalition in ("empty", "full"):
        assert f"results/tiny-shapley/shapley/properties/{source}/{coalition}/seed0.json" in inputs[-2:]


@pytest.mark.slow
def test_changing_the_property_remeasures_without_retraining(tiny_shapley_run, tmp_path):
    jobs = planned_after_change(
        copy_workspace(tiny_shapley_run, tmp_path / "copy"),
        TINY_SHAPLEY,
        {"shapley": {"property": {"name": "entropy"}}},
        planned=planned_outputs,
    )
    properties = stage_outputs(jobs, "coalition_property")
    # only the counterfactual retrains (their coalitions come from the values) are trained again
    assert set(stage_outputs(jobs, "coalition_model")) == {
        f"results/tiny-shapley/shapley/models/coalition/retrain/{side}-{how}/seed0"
        for side in ("top", "bottom")
        for how in ("sparse_ft", "retrain")
    }
    assert "prune" not in jobs and "train_classifier" not in jobs
    # fit (4 + 2 datamodel + empty + full) models of both ways, held-out, counterfactual
    assert len(set(properties)) == len(properties) == 2 * 8 + 3 + 2 * 2
