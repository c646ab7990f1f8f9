"""Every rule of the workflow runs in `make test`: the rules in the DAGs of its tiny runs (the tiny LDS
and contributor runs of tests/workflow_helpers.py, and every preset at toy scale) add up to every rule
that `snakemake --list-rules` names, but those that only a preset's real data reaches."""

import re
import subprocess

import pytest
import yaml

from diffattr.config import validate
from tests.test_presets import PAPER_PRESETS, fake_inputs, toy_scale
from tests.workflow_helpers import (
    ROOT,
    SNAKEMAKE,
    TINY,
    TINY_SHAPLEY,
    layered_config,
    make_workspace,
    planned_jobs,
    stage_jobs,
)

# Rules that no tiny run reaches, each with the reason (none today: a rule added here needs one).
ONLY_REAL_DATA: dict[str, str] = {}


def workflow_stages() -> set[str]:
    """Every rule of the workflow, a batch rule (`{rule}_batch{b}`) counted as its rule: it runs the same
    script on several outputs."""
    listed = subprocess.run(
        [*SNAKEMAKE, "--list-rules"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return {re.sub(r"_batch\d+$", "", line.strip()) for line in listed.stdout.splitlines() if line.strip()}


def dag_stages(workdir) -> set[str]:
    """The rules (batch rules as their rule) in the DAG of a run from nothing of the workspace's config."""
    return set(stage_jobs(planned_jobs(workdir, "--forceall")))


@pytest.mark.slow
def test_the_tiny_runs_of_make_test_reach_every_rule(tmp_path):
    covered: dict[str, set[str]] = {}
    for name, config in (("tiny", TINY), ("tiny-shapley", TINY_SHAPLEY)):
        covered[name] = dag_stages(make_workspace(tmp_path / name, config))
    for preset in PAPER_PRESETS:
        config = fake_inputs(toy_scale(validate(layered_config(preset))), tmp_path / preset.stem / "inputs")
        workdir = tmp_path / preset.stem / "workspace"
        workdir.mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        covered[preset.stem] = dag_stages(workdir)
    reached = set().union(*covered.values())
    missing = workflow_stages() - reached - set(ONLY_REAL_DATA)
    assert not missing, f"no tiny run of make test reaches {sorted(missing)}"
    assert not set(ONLY_REAL_DATA) & reached, (
        "a rule listed as out of reach is reached: drop it from the list"
    )
