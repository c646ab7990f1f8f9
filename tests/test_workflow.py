"""The workflow as a user runs it: dry runs of the presets, config errors, partial reruns, killed jobs."""

import copy
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.workflow_helpers import (
    ROOT,
    SNAKEMAKE,
    TINY,
    TINY_SHAPLEY,
    deep_update,
    make_workspace,
    planned_jobs,
    planned_outputs,
    snakemake,
    stage_jobs,
    stage_outputs,
)

# With pytest-xdist (make test), this module's tests run in one worker, which shares its finished runs.
pytestmark = pytest.mark.xdist_group("tiny-workflow")


def test_cifar2_preset_dry_run_lists_the_paper_jobs(tmp_path):
    workdir = make_workspace(tmp_path)
    jobs = planned_jobs(workdir, "--configfile", str(ROOT / "experiments" / "cifar2-lds.yaml"))
    assert jobs["train_lds"] == 64 * 3
    # the attributed model and the 2 other members of D-TRAK-ensemble3, each featurized on 14 shards
    assert jobs["train_full"] == 3 and jobs["featurize_member"] == 2 * 14
    assert jobs["lds_outputs"] == 64 * 3
    # 10 featurizers x (10 train + 2 val + 2 generated shards of 500)
    assert jobs["featurize"] == 10 * 14
    assert jobs["trak_scores"] == 9 * 2 + 1 and jobs["pixel_scores"] == 2 and jobs["clip_scores"] == 2
    # 60 generated targets x (TRAK, D-TRAK, random); 64 datamodel retrains for 2 methods x 2 splits
    assert jobs["counterfactual_model"] == 60 * 3 and jobs["counterfactual"] == 1
    assert jobs["train_datamodel"] == jobs["datamodel_outputs"] == 64 and jobs["datamodel_scores"] == 4
    # TracIn and ReTrac featurizers at each of the 10 checkpoints; DAS residuals of its 2 featurizers
    assert jobs["featurize_checkpoint"] == 2 * 10 * 14 and jobs["das_residuals"] == 2
    assert jobs["local_scores"] == 8 * 2 and jobs["tracin_scores"] == 2 * 2
    assert jobs["dominating_norm"] == 1
    assert jobs["featurize_journey"] == 2 and jobs["generate"] == 1  # 1000 targets, shard 500
    # EK-FAC: factors fitted once on the trak featurizer, scores per target split
    assert jobs["ekfac_factors"] == 1 and jobs["ekfac_scores"] == 2


def test_cifar20_shapley_preset_dry_run_lists_the_coalition_jobs(tmp_path):
    workdir = make_workspace(tmp_path)
    jobs = planned_jobs(workdir, "--configfile", str(ROOT / "experiments" / "cifar20-shapley.yaml"))
    fit = 300 + 100 + 2  # KernelSHAP coalitions + the datamodel's own + empty + full, for each of the 4 ways
    retrained = 100 * 3 + 4 * 2 * 3 + 2  # held-out x seeds, top/bottom per way x seeds, full x other seeds
    assert jobs["coalition_model"] == 4 * fit + retrained
    assert jobs["coalition_property"] == jobs["coalition_model"]
    assert jobs["prune"] == 1 and jobs["shapley_values"] == 4 * 2
    assert "train_lds" not in jobs and "train_classifier" not in jobs  # LDS off; IS from Inception


def test_image_folder_template_dry_run_values_artists(tmp_path):
    workdir = make_workspace(tmp_path)
    jobs = planned_jobs(workdir, "--configfile", str(ROOT / "experiments" / "artists-shapley.yaml"))
    assert jobs["coalition_model"] == 2 * 402 + 100 * 3 + 2 * 2 * 3 + 2
    assert jobs["contributors"] == 1 and jobs["shapley_values"] == 2 * 2


def test_bad_config_stops_before_any_job_with_one_line(tmp_path):
    workdir = make_workspace(tmp_path, {"lds": {"alpha": 2}})
    result = snakemake(workdir, "-n", check=False)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("diffattr:")]
    assert lines == ["diffattr: config key 'lds.alpha': 2 is greater than or equal to the maximum of 1"]
    assert not (workdir / "results").exists()


FINISHED: dict[str, Path] = {}


def finished_workspace(tmp_path_factory, name, config):
    """A workspace with `config` after a complete run, made once per process: a pytest-xdist worker
    may tear a module fixture down between two of the module's tests and set it up again."""
    if name not in FINISHED:
        workdir = make_workspace(tmp_path_factory.mktemp(name), config)
        snakemake(workdir, "--cores", "2")
        FINISHED[name] = workdir
    return FINISHED[name]


def planned_after_change(workdir, config, change, planned=planned_jobs):
    """Jobs a dry run plans (`planned`: counts per rule, or outputs per job with planned_outputs) once
    `change` is deep-merged into `config`; the config is restored after."""
    make_workspace(workdir, deep_update(copy.deepcopy(config), change))
    try:
        return planned(workdir)
    finally:
        make_workspace(workdir, config)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A workspace after a complete local run of the tiny workflow (TINY): every method's rules."""
    return finished_workspace(tmp_path_factory, "tiny", TINY)


@pytest.mark.slow
def test_tiny_run_writes_every_declared_output(tiny_run):
    out = tiny_run / "results" / "tiny"
    lds = pd.read_csv(out / "metrics" / "lds.csv")
    local = {"DAS", "DAS-leverage", "TracIn", "ReTrac", "relative-IF", "renormalized-IF", "grad-cosine"}
    assert {"TRAK", "D-TRAK", "pixel", *local} <= set(lds["method"]) and set(lds["split"]) == {"val", "gen"}
    dominating = pd.read_csv(out / "metrics" / "dominating_norm.csv")
    assert set(dominating["method"]) == set(lds["method"]) and (dominating["distinct"] >= 1).all()
    assert {
        "method",
        "split",
        "lds",
        "ci_low",
        "ci_high",
        "lambda",
        "n_targets",
        "n_subsets",
    } <= set(lds)
    assert (lds["n_subsets"] == 4).all()
    figures = {p.name for p in (out / "report" / "figures").iterdir()}
    assert (out / "report" / "index.html").is_file() and {"lds.png", "top_attributions.png"} <= figures
    counterfactual = pd.read_csv(out / "metrics" / "counterfactual.csv")
    assert set(counterfactual["method"]) == {"D-TRAK", "random"} and (counterfactual["removed"] <= 8).all()
    assert "counterfactual.png" in figures and "Counterfactual" in (out / "report" / "index.html").read_text()
    assert not list(out.rglob(".*.tmp-*")), "a temporary output was left behind"
    assert planned_jobs(tiny_run) == {}


@pytest.mark.slow
def test_snakemakes_own_report_of_a_finished_run(tiny_run, tmp_path):
    snakemake(tiny_run, "--report", str(tmp_path / "report.html"))
    text = (tmp_path / "report.html").read_text()
    assert "top_attributions.png" in text and "lds.csv" in text


@pytest.mark.slow
def test_changing_gradient_timesteps_reruns_only_what_depends_on_them(tiny_run):
    jobs = stage_jobs(planned_after_change(tiny_run, TINY, {"featurizers": {"trak": {"timesteps": 6}}}))
    rescored = {"trak_scores", "local_scores", "dominating_norm"}
    assert set(jobs) == {"featurize", *rescored, "lds", "report", "all"}
    # trak only: its 2 train + val + gen shards, in one job (featurize.shards_per_job)
    assert jobs["featurize"] == 1 and jobs["trak_scores"] == 2
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
    snakemake(workdir, "--unlock")
    assert planned_jobs(workdir, target) == {"train_full": 1}


@pytest.fixture(scope="module")
def tiny_shapley_run(tmp_path_factory):
    return finished_workspace(tmp_path_factory, "tiny-shapley", TINY_SHAPLEY)


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
    assert len(pd.read_csv(out / "metrics" / "counterfactual.csv")) == 4
    assert len(pd.read_csv(out / "metrics" / "agreement.csv")) == 2 * 2  # pearson + spearman per estimator
    report = tiny_shapley_run / "results" / "tiny-shapley" / "report"
    figures = {p.name for p in (report / "figures").iterdir()}
    assert {"values.png", "shapley_lds.png", "contributor_counterfactual.png"} <= figures
    assert "Contributor values" in (report / "index.html").read_text()
    assert planned_jobs(tiny_shapley_run) == {}


@pytest.mark.slow
def test_changing_the_property_remeasures_without_retraining(tiny_shapley_run):
    jobs = planned_after_change(
        tiny_shapley_run,
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
