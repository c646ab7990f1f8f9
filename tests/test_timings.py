"""Stage timings: job seconds per rule from benchmark files, and start-up seconds from the jobs' logs."""

import subprocess
import sys

import pytest

from diffattr.timings import stage_timings

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_job(root, stage, part, seconds, cpu, startup=None):
    bench = root / "benchmarks" / stage / f"{part}.tsv"
    bench.parent.mkdir(parents=True, exist_ok=True)
    bench.write_text(HEADER + f"{seconds}\t0:00:01\t100.0\t1\t1\t1\t0\t0\t1\t{cpu}\n")
    if startup is not None:
        log = root / "logs" / stage / f"{part}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"12:00:00 diffattr start-up: {startup} s wall, 1.00 s CPU before the job's work\n")


def test_stage_timings_sum_jobs_cpu_and_start_up_per_stage(tmp_path):
    write_job(tmp_path, "train_lds", "batch0", 40.0, 30.0, startup=10.0)
    write_job(tmp_path, "train_lds", "batch1", 20.0, 15.0, startup=5.0)
    write_job(tmp_path, "lds", "all", 4.0, 2.0)  # a log without the line counts no start-up
    table = stage_timings(tmp_path / "benchmarks").set_index("stage")
    assert table.loc["train_lds", ["jobs", "total_s", "longest_s", "cpu_s", "startup_s"]].tolist() == [
        2,
        60.0,
        40.0,
        45.0,
        15.0,
    ]
    assert table.loc["train_lds", "startup_share"] == pytest.approx(0.25)
    assert table.loc["lds", "startup_s"] == 0 and table.loc["lds", "startup_share"] == 0


def test_a_job_logs_its_start_up_in_the_line_timings_read(tmp_path):
    """A fresh interpreter, as Snakemake starts for each job, logs its start-up; timings reads it back."""
    log = tmp_path / "logs" / "lds" / "all.log"
    code = f"from diffattr.runtime import job\nwith job({str(log)!r}):\n    pass\n"
    subprocess.run([sys.executable, "-c", code], check=True)
    write_job(tmp_path, "lds", "all", 100.0, 1.0)
    startup = stage_timings(tmp_path / "benchmarks").set_index("stage").loc["lds", "startup_s"]
    assert 0 < startup < 100
