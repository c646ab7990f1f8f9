"""The workflow on a real (throwaway, single-node) SLURM cluster, driven as a user drives it.

`snakemake --profile profiles/slurm` against the cluster of tests/slurm_cluster.py (slurmctld +
slurmd, 2 fake GPUs, no accounting): the same results as a local run, GPU rules asking SLURM for a
GPU, job arrays, a cancelled job retried, a killed driver resumed without redoing finished jobs.
Skipped, with the reason, where SLURM cannot be brought up (no slurm-wlm/munge, not root).
The dry run of the CIFAR-2 preset needs no SLURM and always runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.slurm_cluster import CLIENT_COMMANDS, SLURM_BINARIES, SlurmCluster, SlurmClusterError
from tests.workflow_helpers import (
    PRESET_PLANS,
    ROOT,
    SNAKEMAKE,
    TINY,
    copy_workspace,
    deep_update,
    make_workspace,
    planned_gpu_rules,
    planned_jobs,
    preset_jobs,
    rule_resources,
    stage_jobs,
)

# With pytest-xdist (make test), this module's tests run in one worker: one throwaway cluster per module.
pytestmark = pytest.mark.xdist_group("slurm")

PROFILE = ROOT / "profiles" / "slurm"
# What a user types (the profile carries everything else); the short status checks only make the tests
# faster (the plugin adds 10 s to the wait after each check that finds no job done), a real run is fine
# with the defaults of 40 s and 10 s.
SLURM_ARGS = (
    "--profile",
    str(PROFILE),
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "1",
)
# Stages (rules, or their `_batch{b}` rules) that must ask SLURM for a GPU, and some that must not.
GPU_STAGES = {"train_full", "train_lds", "generate", "featurize", "lds_outputs"}
CPU_RULES = {"prepare_data", "lds_subsets", "trak_scores", "pixel_scores", "lds", "report"}
# The tiny workflow cut to what SLURM itself can get wrong: GPU and CPU rules, a job array per rule
# (4 train_lds jobs of one model each), gradient shards, the report. Every method's rules run in the
# local tiny runs (tests/test_workflow.py, tests/test_e2e.py) and dry-run here with their resources.
SLURM_TINY = {
    **TINY,
    "lds": {**TINY["lds"], "models_per_job": 1},
    "featurizers": {"trak": TINY["featurizers"]["trak"]},
    "methods": {"TRAK": {"kind": "trak", "featurizer": "trak"}, "pixel": {"kind": "pixel"}},
    "counterfactual": {"enabled": False},
    "replace_sections": ["featurizers", "methods"],
}
RUN_TIMEOUT = 1200  # seconds for one whole tiny run on SLURM (about 3-5 minutes on 2 busy cores)


# --------------------------------------------------------------------------------------- helpers
class Driver:
    """`snakemake` on the cluster in the background, in its own session, output to a log file."""

    def __init__(self, cluster: SlurmCluster, workdir: Path, *args: str, log: Path) -> None:
        self.cluster, self.workdir, self.log = cluster, workdir, log
        self.argv = [*SNAKEMAKE, "-d", str(workdir), *SLURM_ARGS, *args]
        self.start = time.monotonic()
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=cluster.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 6000) -> str:
        return f"--- {self.log} (end) ---\n{self.output()[-chars:]}"

    def run_id(self) -> str | None:
        """The plugin's run ID: the SLURM job name of every job this driver submits."""
        match = re.search(r"SLURM run ID: (\S+)", self.output())
        return match.group(1) if match else None

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        """Exit code; on timeout, interrupt (snakemake cancels its jobs), then kill, then fail."""
        try:
            return self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.start)))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"snakemake did not finish within {timeout:.0f} s\n{self.tail()}") from None

    def stop(self) -> None:
        """SIGINT (snakemake ignores SIGTERM while it waits for jobs), then SIGKILL; both to its group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        cancel_run(self.cluster, self.run_id())

    def kill(self) -> None:
        """The login node dies: SIGKILL the driver and its children (not the SLURM jobs)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start

    def wait_for(self, what: str, ready, timeout: float = 600) -> None:
        """Poll `ready()` until true; fail with the log if the driver exits first or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"snakemake exited ({self.proc.returncode}) before {what}\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.tail()}")
            time.sleep(0.5)


def slurm(cluster: SlurmCluster, *argv: str) -> str:
    result = subprocess.run(argv, env=cluster.env(), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def live_jobs(cluster: SlurmCluster, run_id: str) -> list[tuple[str, str, str]]:
    """(job id, state, comment) of this run's jobs that are pending, running or ending."""
    out = slurm(cluster, "squeue", "-h", f"--name={run_id}", "-t", "PD,R,CG,S,CF", "-o", "%i|%T|%k")
    return [tuple(line.split("|", 2)) for line in out.splitlines() if line.strip()]


def cancel_run(cluster: SlurmCluster, run_id: str | None, timeout: float = 60) -> list[str]:
    """scancel whatever is left of one run (its job ids on this cluster); wait until they are gone."""
    if not run_id or not cluster.running():
        return []
    ids = [job_id for job_id, _, _ in live_jobs(cluster, run_id)]
    if ids:
        subprocess.run(["scancel", *ids], env=cluster.env(), capture_output=True, timeout=60)
    deadline = time.monotonic() + timeout
    while live_jobs(cluster, run_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    return ids


class JobWatcher:
    """Every job slurmctld shows while a run is going (`scontrol -d show job -o` every second).

    Polling during the run sees each job even if it finished longer than MinJobAge before the end.
    Jobs are keyed by array task (`123_4`) or job id; pending array remainders are skipped.
    """

    def __init__(self, cluster: SlurmCluster, interval: float = 1.0) -> None:
        self.cluster, self.interval = cluster, interval
        self.jobs: dict[str, dict[str, str]] = {}
        self.gres_seen: dict[str, str] = {}  # job -> GRES allocated while it was running
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> JobWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.poll()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.poll()

    def poll(self) -> None:
        out = subprocess.run(
            ["scontrol", "-d", "show", "job", "-o"],
            env=self.cluster.env(),
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        for line in out.splitlines():
            fields = dict(re.findall(r"(\S+?)=(\S*)", line))
            if "JobId" not in fields:
                continue
            task = fields.get("ArrayTaskId")
            if task is not None and not task.isdigit():
                continue  # the still-pending rest of an array ("2-4"); its tasks show up one by one
            key = f"{fields['ArrayJobId']}_{task}" if task else fields["JobId"]
            fields["rule"] = rule_of(fields.get("Comment", ""))
            self.jobs[key] = fields
            gres = re.search(r"\bGRES=(gpu\S*)", line)
            if fields.get("JobState") == "RUNNING" and gres:
                self.gres_seen[key] = gres.group(1)

    def of_run(self, run_id: str | None) -> dict[str, dict[str, str]]:
        return {key: job for key, job in self.jobs.items() if job.get("JobName") == run_id}


def rule_of(comment: str) -> str:
    """The rule from the plugin's job comment `rule_<rule>[_wildcards_<values>]`."""
    match = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", comment)
    return match.group(1) if match else ""


def submissions(log: str) -> tuple[list[str], list[list[str]]]:
    """SLURM job ids of single submissions, and the Snakemake job ids of each array submission."""
    singles = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    arrays = re.findall(r"Submitted array job with Snakemake IDs ([\d,]+) and SLURM job ID \d+", log)
    return singles, [ids.split(",") for ids in arrays]


def rules_scheduled(log: str) -> set[str]:
    """Rules of the jobs a driver scheduled (the `rule <name>:` headers of its log)."""
    return set(re.findall(r"^\s*rule (\w+):$", log, flags=re.MULTILINE))


def stamp(path: Path) -> tuple[int, int]:
    """Inode and mtime: a rerun replaces a directory output (atomic rename), changing both."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def lds_rows(out: Path, methods: list[str]) -> pd.DataFrame:
    """The rows of `methods` in an experiment's metrics/lds.csv, by method and split."""
    table = pd.read_csv(out / "metrics" / "lds.csv")
    return table[table["method"].isin(methods)].sort_values(["method", "split"], ignore_index=True)


def tiny_workspace(path: Path, **overrides) -> Path:
    return make_workspace(path, deep_update(json.loads(json.dumps(SLURM_TINY)), overrides))


def tiny_copy(tiny_run: Path, path: Path, **overrides) -> Path:
    """A copy of the local tiny run with SLURM_TINY's config: its data is made (prepare_data is up to
    date); the full model and what follows it rerun when `overrides` change its training."""
    copy_workspace(tiny_run, path)
    return tiny_workspace(path, **overrides)


# -------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One throwaway SLURM cluster for the module; stop() ends only the daemons it started."""
    ok, why = SlurmCluster.available()
    if not ok:
        pytest.skip(f"no SLURM cluster on this machine: {why}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), gpus=2)
    try:
        cluster.start()
    except SlurmClusterError as err:
        pytest.skip(f"SLURM could not be brought up here: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()


# ----------------------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_tiny_run_on_slurm_matches_a_local_run(cluster, tiny_run, tmp_path):
    on_slurm = tiny_workspace(tmp_path / "slurm")
    planned = {rule: count for rule, count in planned_jobs(on_slurm).items() if rule != "all"}
    gpu_rules = planned_gpu_rules(on_slurm)
    assert GPU_STAGES <= set(stage_jobs(dict.fromkeys(gpu_rules, 1))), gpu_rules
    assert not gpu_rules & CPU_RULES, gpu_rules & CPU_RULES
    with JobWatcher(cluster) as watcher:
        driver = Driver(cluster, on_slurm, log=tmp_path / "slurm.log")
        code = driver.wait()
    wall = driver.seconds
    assert code == 0, f"the SLURM run failed\n{driver.tail()}"
    log = driver.output()

    # SLURM really ran the jobs, as arrays where a rule has several, GPU rules with a GPU.
    singles, arrays = submissions(log)
    tasks = sum(len(a) for a in arrays)
    jobs = watcher.of_run(driver.run_id())
    by_rule: dict[str, int] = {}
    for job in jobs.values():
        by_rule[job["rule"]] = by_rule.get(job["rule"], 0) + 1
    stats = {
        "wall_seconds": round(wall, 1),
        "sbatch_submissions": len(singles) + len(arrays),
        "array_submissions": len(arrays),
        "slurm_jobs": len(singles) + tasks,
        "slurm_jobs_seen": len(jobs),
        "jobs_per_rule": dict(sorted(by_rule.items())),
    }
    (tmp_path / "slurm_run.json").write_text(json.dumps(stats, indent=2))
    print(f"\ntiny workflow on SLURM: {json.dumps(stats)} (also in {tmp_path / 'slurm_run.json'})")

    assert arrays, f"no job array was submitted\n{driver.tail()}"
    assert len(jobs) == len(singles) + tasks, f"squeue saw {len(jobs)} jobs, the log {len(singles) + tasks}"
    assert all(job["JobState"] == "COMPLETED" for job in jobs.values()), {
        k: (j["rule"], j["JobState"]) for k, j in jobs.items() if j["JobState"] != "COMPLETED"
    }
    assert by_rule == planned, f"SLURM ran {by_rule}, the dry run planned {planned}"
    for key, job in jobs.items():
        asks_gpu = "gpu:1" in job.get("TresPerJob", "")
        assert asks_gpu == (job["rule"] in gpu_rules), (
            f"{key} ({job['rule']}): TresPerJob={job.get('TresPerJob')}"
        )
    gpu_running = {k: g for k, g in watcher.gres_seen.items() if k in jobs}
    assert gpu_running, "no running GPU job was seen with a GPU allocated"
    assert all(g.startswith("gpu") and jobs[k]["rule"] in gpu_rules for k, g in gpu_running.items())

    # The same numbers as the local tiny run (TINY, of which SLURM_TINY is a cut: the same data, seeds and
    # trak featurizer; its LDS models batched, which makes the same bits): what both runs have.
    out_slurm, out_local = on_slurm / "results" / "tiny", tiny_run / "results" / "tiny"
    # Where runs diverge first: the full model's training losses (logged from the first steps).
    losses = [
        json.loads((out / "models" / "full" / "seed0" / "training.json").read_text())["losses"]
        for out in (out_slurm, out_local)
    ]
    np.testing.assert_allclose(
        losses[0],
        losses[1],
        rtol=1e-6,
        err_msg="the full model trains differently on SLURM and locally from its first steps "
        "(same data, same seed): is the model's initialization seeded?",
    )
    models = sorted(p.relative_to(out_slurm) for p in (out_slurm / "outputs" / "lds").rglob("*.npz"))
    assert len(models) == SLURM_TINY["lds"]["num_subsets"], models
    for model in models:
        a, b = np.load(out_slurm / model), np.load(out_local / model)
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=f"{model}:{key}")
    lds_slurm, lds_local = (lds_rows(out, list(SLURM_TINY["methods"])) for out in (out_slurm, out_local))
    assert list(lds_slurm.columns) == list(lds_local.columns) and len(lds_slurm) == len(lds_local) == 4
    numeric = lds_slurm.select_dtypes("number").columns
    assert (lds_slurm.drop(columns=numeric).values == lds_local.drop(columns=numeric).values).all()
    np.testing.assert_allclose(
        lds_slurm[numeric].to_numpy(float), lds_local[numeric].to_numpy(float), rtol=1e-6, equal_nan=True
    )


@pytest.mark.slow
def test_killed_slurm_job_is_retried_and_run_completes(cluster, tiny_run, tmp_path):
    # 300 steps: the first logged (step 30) leaves the test many seconds to cancel the job while it trains
    workdir = tiny_copy(tiny_run, tmp_path / "ws", train={"steps": 300})
    out = workdir / "results" / "tiny"
    model, training_log = out / "models" / "full" / "seed0", out / "logs" / "train_full" / "seed0.log"
    training_log.unlink()  # the copied run's: the training below logs afresh
    targets = ("results/tiny/models/full/seed0", "results/tiny/samples/full.zarr")
    with JobWatcher(cluster) as watcher:
        driver = Driver(cluster, workdir, *targets, log=tmp_path / "driver.log")
        try:
            driver.wait_for(
                "train_full to be training",
                lambda: training_log.exists() and "step" in training_log.read_text(),
            )
            running = [
                job_id
                for job_id, state, comment in live_jobs(cluster, driver.run_id())
                if state == "RUNNING" and rule_of(comment) == "train_full"
            ]
            assert len(running) == 1, live_jobs(cluster, driver.run_id())
            slurm(cluster, "scancel", running[0])
            driver.wait_for(
                f"job {running[0]} to be gone",
                lambda: (
                    slurm(cluster, "squeue", "-h", "-j", running[0], "-t", "R,CG", "-o", "%T").strip() == ""
                ),
                timeout=120,
            )
            # The job is dead: nothing looks complete, at most a hidden temporary is left.
            assert not model.exists(), "a killed training left a model that looks complete"
            leftovers = [p.name for p in model.parent.iterdir()]
            assert all(re.fullmatch(r"\.seed0\.tmp-\d+", name) for name in leftovers), leftovers
            code = driver.wait()
        finally:
            driver.stop()
    assert code == 0, f"the run did not recover from the cancelled job\n{driver.tail()}"
    trainings = sorted(
        (int(job["JobId"]), job["JobState"])
        for job in watcher.of_run(driver.run_id()).values()
        if job["rule"] == "train_full"
    )
    assert [state for _, state in trainings] == ["CANCELLED", "COMPLETED"], trainings
    assert (model / "training.json").is_file() and (model / "unet").is_dir()
    assert (out / "samples" / "full.zarr").is_dir(), "the job after the retried one did not run"
    assert json.loads((model / "training.json").read_text())["steps"] == 300
    print(f"\ncancelled training retried, run completed in {driver.seconds:.0f} s")


@pytest.mark.slow
def test_driver_killed_and_restarted_resumes_without_redoing_finished_work(cluster, tiny_run, tmp_path):
    # the tiny run's data and subsets, a full model of 10 steps (the tiny run's has 20) to make on SLURM
    workdir = tiny_copy(tiny_run, tmp_path / "ws", train={"steps": 10})
    out = workdir / "results" / "tiny"
    targets = ("results/tiny/samples/full.zarr", "results/tiny/subsets/lds.npz")
    first = Driver(cluster, workdir, *targets, log=tmp_path / "first.log")
    try:
        # Kill the driver once train_full has finished and generate is submitted.
        first.wait_for(
            "train_full to finish and generate to be submitted",
            lambda: (
                "(Rule: train_full)" in first.output()
                and re.search(r"^rule generate:$", first.output(), flags=re.MULTILINE) is not None
            ),
        )
        time.sleep(2)  # let the submission go through: the job then outlives its driver
        first.kill()
    except BaseException:
        first.stop()
        raise
    finished = {
        "data/train.zarr": stamp(out / "data" / "train.zarr"),
        "data/train.zarr/.snakemake_timestamp": stamp(out / "data" / "train.zarr" / ".snakemake_timestamp"),
        "models/full/seed0": stamp(out / "models" / "full" / "seed0"),
        "models/full/seed0/training.json": stamp(out / "models" / "full" / "seed0" / "training.json"),
    }
    # What a user does next: the same command again, nothing before it. The dead driver's jobs still in
    # SLURM are left alone: running ones are waited for, queued ones stop when they start.
    orphans = [job_id for job_id, _, _ in live_jobs(cluster, first.run_id())]
    print(f"\ndriver killed after {first.seconds:.0f} s; its SLURM jobs left {orphans}")
    with JobWatcher(cluster) as watcher:
        second = Driver(cluster, workdir, *targets, log=tmp_path / "second.log")
        code = second.wait()
    assert code == 0, f"the restarted run failed\n{second.tail()}"
    assert "LockException" not in second.output()
    assert not live_jobs(cluster, first.run_id()), "a job of the killed driver outlived the restarted run"
    redone = rules_scheduled(second.output())
    assert redone and not redone & {"prepare_data", "train_full"}, f"the restart redid {redone}"
    assert not {job["rule"] for job in watcher.of_run(second.run_id()).values()} & {
        "prepare_data",
        "train_full",
    }
    for path, before in finished.items():
        assert stamp(out / path) == before, f"{path} was rewritten by the restart"
    assert (out / "samples" / "full.zarr").is_dir() and (out / "subsets" / "lds.npz").is_file()
    print(f"restart redid only {sorted(redone)}, finished in {second.seconds:.0f} s")


def test_cifar2_slurm_dry_run_lists_gpu_resources(tmp_path):
    """The documented cluster command's dry run works on a machine without SLURM."""
    workdir = make_workspace(tmp_path / "ws")
    env = _env_without_slurm(tmp_path / "bin")
    assert not any(shutil.which(name, path=env["PATH"]) for name in ("sbatch", "sinfo", "squeue", "scontrol"))
    result = subprocess.run(
        [
            *SNAKEMAKE,
            "-d",
            str(workdir),
            "-n",
            "--profile",
            str(PROFILE),
            "--configfile",
            str(ROOT / "experiments" / "cifar2-lds.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resources = rule_resources(result.stdout + result.stderr)
    assert GPU_STAGES | CPU_RULES <= set(resources), sorted(resources)
    for rule in GPU_STAGES:
        assert all(re.search(r"\bgpu=1\b", r) for r in resources[rule]), (rule, resources[rule])
    for rule in CPU_RULES:
        assert not any(re.search(r"\bgpu=", r) for r in resources[rule]), (rule, resources[rule])
    assert not (workdir / "results").exists()


@pytest.mark.xdist_group(PRESET_PLANS)
def test_slurm_profile_offers_every_ready_job_to_job_arrays():
    """With job arrays on, the `jobs` cap must exceed the number of jobs of the CIFAR-2 preset.

    snakemake-executor-plugin-slurm 2.8.0 (array mode) holds back a rule's batch when more of the
    rule's jobs are ready than the scheduler offered (the `jobs` cap), and never submits it: the run
    then hangs with "Selected jobs: 0" (plugin issue #473; reproduced on the test cluster with
    `--jobs 2` and 6 ready train_lds jobs). A cap above the workflow's job count always offers every
    ready job; without arrays any cap works.
    """
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    if not profile.get("slurm-array-jobs") or profile["slurm-array-jobs"] == "none":
        return
    jobs = preset_jobs("cifar2-lds")
    total = sum(jobs.values())
    cap = profile.get("jobs")
    assert cap == "unlimited" or int(cap) >= total, (
        f"profiles/slurm: jobs: {cap} is below the {total} jobs of the CIFAR-2 preset "
        f"({max(jobs.values())} of one rule) while slurm-array-jobs is on: the run would hang"
    )


def _env_without_slurm(bindir: Path) -> dict[str, str]:
    """os.environ with PATH replaced by one folder of links to every program on it but SLURM's."""
    bindir.mkdir(parents=True, exist_ok=True)
    hidden = set(SLURM_BINARIES) | set(CLIENT_COMMANDS) | {"sacctmgr", "sshare", "sreport", "sprio", "sdiag"}
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not folder or not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            link = bindir / entry.name
            if entry.name in hidden or link.exists() or link.is_symlink():
                continue
            link.symlink_to(entry.path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env["PATH"] = str(bindir)
    return env
