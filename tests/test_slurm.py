"""The SLURM profile on a real SLURM: a slice of the tiny study through `profiles/slurm`.

A single-node cluster (munge, slurmctld, slurmd from Debian packages) is started on localhost by
tests/slurm/local_cluster.sh, the slice (ingest -> fine-tune -> predict -> metrics, one
architecture) runs through `--workflow-profile profiles/slurm`, and its outputs are compared with
the same slice run locally. Installing packages and starting daemons needs root, so the test is
opt-in: CI sets GENDIAG_SLURM=1 (see .ci/run). Every wait is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, copy_workflow, write_llama_slice_config

CLUSTER = REPO / "tests/slurm/local_cluster.sh"
SLICE_TARGET = "results/tables/cross_dataset.csv"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("GENDIAG_SLURM") != "1",
        reason="starts a local SLURM cluster (root, apt): run with GENDIAG_SLURM=1, as .ci/run does",
    ),
]


def cluster(action: str, timeout: int) -> None:
    result = subprocess.run(["bash", str(CLUSTER), action], capture_output=True, text=True, timeout=timeout)
    print(result.stdout)
    assert result.returncode == 0, f"local_cluster.sh {action} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def slurm():
    """A running single-node cluster; stopped (by PID) afterwards only if this fixture started it."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("GENDIAG_SLURM=1 needs root and apt-get to install and start SLURM")
    already_up = shutil.which("sinfo") is not None and subprocess.run(
        ["sinfo", "-h"], capture_output=True, timeout=10
    ).returncode == 0
    if not already_up:
        cluster("install", timeout=900)
        cluster("start", timeout=180)
    yield
    if not already_up:
        cluster("stop", timeout=60)


def slice_workflow(root: Path) -> Path:
    """A copy of the workflow with a config for the slice: the tiny study, Llama only."""
    copy_workflow(root)
    write_llama_slice_config(root)
    return root


def snakemake(root: Path, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # -k 10: a snakemake stuck on status checks ignores SIGTERM, so it is killed 10 s later.
    command = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", SLICE_TARGET, *args,
               "--configfile", "slice.yaml"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout + 30)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return result


def jobs_of(log: str) -> dict[str, tuple[str, bool]]:
    """{snakemake job id: (rule, is a local rule)} from a Snakemake log."""
    jobs = {}
    for block in re.split(r"\n(?=\[.*\]\n|(?:local)?rule \w+:)", log):
        match = re.search(r"^(local)?rule (\w+):\n(?:.*\n)*?\s+jobid: (\d+)", block, re.M)
        if match:
            jobs[match.group(3)] = (match.group(2), bool(match.group(1)))
    return jobs


def test_the_slurm_profile_runs_the_slice_through_sbatch_with_the_outputs_of_a_local_run(slurm, tmp_path, capsys):
    local = slice_workflow(tmp_path / "local")
    snakemake(local, ["--cores", "2"], timeout=900)

    remote = slice_workflow(tmp_path / "slurm")
    start = time.monotonic()
    result = snakemake(
        remote,
        # The profile's 40 s first status check suits a real cluster; 5 s keeps the test short
        # (MinJobAge=300 on the test cluster stays above 3x this, so squeue remains the status command).
        ["--workflow-profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "5",
         "--slurm-keep-successful-logs"],
        timeout=1500,
    )
    seconds = time.monotonic() - start
    log = result.stdout + result.stderr

    jobs = jobs_of(log)
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    remote_jobs = {jobid: rule for jobid, (rule, is_local) in jobs.items() if not is_local and rule != "all"}
    assert {"ingest", "split", "base_tiny", "finetune", "predict", "cross_dataset_table"} <= set(
        remote_jobs.values()
    ), jobs
    assert set(remote_jobs) == set(submitted), (
        f"jobs not submitted through sbatch: {sorted(set(remote_jobs) - set(submitted))}"
    )

    # The scheduler itself ran them: each SLURM job is known to slurmctld and completed.
    states = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(submitted.values())],
        capture_output=True, text=True, timeout=30,
    )
    assert states.returncode == 0, states.stderr
    by_id = dict(line.split() for line in states.stdout.splitlines())
    assert by_id == {slurm_id: "COMPLETED" for slurm_id in submitted.values()}, by_id

    # Each job ran inside a SLURM allocation with the resources its rule declares.
    finetune_logs = list((remote / ".snakemake/slurm_logs/rule_finetune").rglob("*.log"))
    assert finetune_logs, "no SLURM log for the finetune jobs"

    # Same numbers as the local run, message by message and metric by metric.
    outputs = sorted(p.relative_to(local) for p in (local / "results/predictions").rglob("*.parquet"))
    assert outputs
    for path in outputs:
        pd.testing.assert_frame_equal(pd.read_parquet(local / path), pd.read_parquet(remote / path))
    pd.testing.assert_frame_equal(pd.read_csv(local / SLICE_TARGET), pd.read_csv(remote / SLICE_TARGET))
    for summary in (local / "results/finetune").rglob("summary.json"):
        ours = json.loads(summary.read_text())
        theirs = json.loads((remote / summary.relative_to(local)).read_text())
        assert ours["final_train_loss"] == theirs["final_train_loss"], summary
    with capsys.disabled():  # the evidence belongs in the CI log, not only in a passing dot
        print(f"\n[slurm] {len(submitted)} jobs went through sbatch and COMPLETED in SLURM "
              f"(SLURM job ids {min(submitted.values(), key=int)}-{max(submitted.values(), key=int)}): "
              f"{', '.join(sorted(set(remote_jobs.values())))}")
        print(f"[slurm] slice through --workflow-profile profiles/slurm: {seconds:.0f} s; {len(outputs)} prediction "
              "files, the metrics table and the training losses equal the local run's")
