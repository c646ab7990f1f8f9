"""Run the Snakemake workflow in a temporary workspace, as a user would from the command line."""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from filelock import FileLock

from diffattr.preflight import replace_sections

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile")]

# A tiny version of the embedded default: every rule kind, in about a minute on two cores.
TINY = {
    "experiment": "tiny",
    "data": {"n_train": 40, "n_val": 8},
    "model": {"block_out_channels": [8, 16], "norm_num_groups": 4},
    "train": {"steps": 20, "batch_size": 16, "checkpoints": 1},
    "lds": {"num_subsets": 4, "timesteps": 10},
    "generate": {"num_images": 8, "num_inference_steps": 5},
    "featurizers": {
        "trak": {"output": "loss", "timesteps": 5, "dim": 64},
        "dtrak": {"output": "squared_norm", "timesteps": 5, "dim": 64},
        "das": {"output": "mean", "timesteps": 5, "dim": 64},
        "tracin": {"output": "loss", "timesteps": 5, "dim": 64},
        "retrac": {"output": "loss", "timesteps": 5, "dim": 64},
    },
    "featurize": {"shard_size": 20},
    "evaluate": {"bootstrap": 50},
    "counterfactual": {"num_targets": 1, "remove": 8, "methods": ["D-TRAK"]},
    "shapley": {"enabled": False},
}

# A tiny contributor-valuation branch alone: 3 digit classes as contributors, every rule of it.
TINY_SHAPLEY = {
    "experiment": "tiny-shapley",
    "model": TINY["model"],
    "lds": {"enabled": False},
    "shapley": {
        "enabled": True,
        "data": {"source": "digits", "classes": [0, 1, 2], "n_train": 30, "n_val": 3},
        "train": {"steps": 20, "batch_size": 16},
        "num_coalitions": 4,
        "heldout": {"num_coalitions": 3, "seeds": [0]},
        "models_per_job": 8,  # coalition models and properties in batch jobs, as the demo makes them
        "contributors": {"planted": {"ids": [2], "corruption": "shuffle"}},
        "datamodel": {"num_coalitions": 2, "alpha": 0.34},  # single contributors: no held-out overlap
        "pruning": {"steps": 5},
        "finetune": {"steps": 5},
        "property": {"num_images": 12, "num_inference_steps": 3},
        "classifier": {"steps": 20},
        "bootstrap": 20,
    },
    "evaluate": {"bootstrap": 50},
}


def deep_update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def layered_config(preset: Path) -> dict:
    """config.yaml with a preset layered on it as `--configfile` does: merged, then replace_sections."""
    config = deep_update(
        yaml.safe_load((ROOT / "config.yaml").read_text()), yaml.safe_load(preset.read_text())
    )
    return {**config, **replace_sections([preset])}


def make_workspace(path: Path, overrides: dict | None = None) -> Path:
    """A folder with config.yaml = the embedded default updated with `overrides`; the sections that
    `overrides` lists under `replace_sections` replace the default's, as in a preset."""
    overrides = copy.deepcopy(overrides or {})
    replaced = {section: overrides.pop(section) for section in overrides.pop("replace_sections", [])}
    config = deep_update(yaml.safe_load((ROOT / "config.yaml").read_text()), overrides)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump({**config, **replaced}))
    return path


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: float = 3600
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*SNAKEMAKE, "-d", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def shared_folder(tmp_path_factory) -> Path:
    """The session's temporary folder that every pytest-xdist worker sees (their parent), else its own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def finished_run(folder: Path, name: str, config: dict) -> Path:
    """`folder/name` after a complete run of `config`, made once: the first process to take the lock runs
    it, the others wait and reuse it (name.done) or fail with its error (name.failed)."""
    workdir, done, failed = folder / name, folder / f"{name}.done", folder / f"{name}.failed"
    with FileLock(folder / f"{name}.lock"):
        if failed.exists():
            raise AssertionError(failed.read_text())
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)  # a process killed while running it left it half made
            try:
                snakemake(make_workspace(workdir, config), "--cores", "2")
            except Exception as err:
                failed.write_text(f"the shared run of {name} failed: {err}")
                raise
            done.touch()
    return workdir


def copy_workspace(src: Path, dst: Path) -> Path:
    """A copy of a workspace that Snakemake finds as up to date as the original: mtimes kept, links kept.
    Not .snakemake/locks, which a Snakemake reading the original (--report) may remove meanwhile."""

    def locks(folder: str, names: list[str]) -> list[str]:
        return ["locks"] if Path(folder).name == ".snakemake" else []

    shutil.copytree(src, dst, symlinks=True, ignore=locks)
    return dst


def stage_jobs(jobs: dict[str, int]) -> dict[str, int]:
    """Job counts with batch rules (`{rule}_batch{b}`, models_per_job > 1) counted under their rule."""
    counts: dict[str, int] = {}
    for rule, count in jobs.items():
        stage = re.sub(r"_batch\d+$", "", rule)
        counts[stage] = counts.get(stage, 0) + count
    return counts


def planned_outputs(workdir: Path, *args: str) -> dict[str, list[list[str]]]:
    """Rule -> the outputs of each job a dry run plans (a batch rule's job lists several)."""
    result = snakemake(workdir, *args, "-n")
    jobs: dict[str, list[list[str]]] = {}
    rule = None
    for line in (result.stdout + result.stderr).splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line.strip()):
            rule = match.group(1)
        elif rule and line.strip().startswith("output: "):
            jobs.setdefault(rule, []).append(line.strip().removeprefix("output: ").split(", "))
            rule = None
    return jobs


def stage_outputs(jobs: dict[str, list[list[str]]], stage: str) -> list[str]:
    """Every output that the jobs of rule `stage` and of its batch rules (`{stage}_batch{b}`) plan, sorted."""
    return sorted(
        path
        for rule, outputs in jobs.items()
        if re.fullmatch(rf"{stage}(_batch\d+)?", rule)
        for job in outputs
        for path in job
    )


def rule_resources(dry_run_output: str) -> dict[str, set[str]]:
    """Rule -> the `resources:` lines its jobs print in a dry run's output."""
    resources: dict[str, set[str]] = {}
    job = r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$"
    for rule, res in re.findall(job, dry_run_output, flags=re.MULTILINE):
        resources.setdefault(rule, set()).add(res)
    return resources


def planned_gpu_rules(workdir: Path, *args: str) -> set[str]:
    """Rules whose jobs a dry run plans with a GPU (`gpu=1` among their resources)."""
    result = snakemake(workdir, *args, "-n")
    resources = rule_resources(result.stdout + result.stderr)
    return {rule for rule, lines in resources.items() if any(re.search(r"\bgpu=1\b", r) for r in lines)}


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when nothing is to be done)."""
    result = snakemake(workdir, *args, "-n", "--quiet", "rules")
    counts = {}
    for line in (result.stdout + result.stderr).splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


@functools.cache
def _preset_jobs(preset: str) -> tuple[tuple[str, int], ...]:
    with tempfile.TemporaryDirectory() as folder:
        path = ROOT / "experiments" / f"{preset}.yaml"
        return tuple(planned_jobs(make_workspace(Path(folder)), "--configfile", str(path)).items())


def preset_jobs(preset: str) -> dict[str, int]:
    """Rule -> job count of a preset's dry run on config.yaml, made once per process: the tests that read
    a preset's plan share it, in one pytest-xdist group (PRESET_PLANS)."""
    return dict(_preset_jobs(preset))


PRESET_PLANS = "preset-plans"  # the xdist group of the tests that read preset_jobs
