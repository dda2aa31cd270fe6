"""Preemption: a fine-tuning job killed with SIGTERM (what SLURM sends) resumes where it stopped.

Two copies of a one-model slice of the tiny study: one trains uninterrupted; in the other the
fine-tuning process gets SIGTERM after its first checkpoint, the job fails, and rerunning
Snakemake resumes from the checkpoint. The resumed adapter, training log and predictions must
equal the uninterrupted run's exactly (CPU training is deterministic).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from conftest import copy_workflow, write_llama_slice_config

RUN = "llama/generalist/standard/seed0"
TARGET = f"results/predictions/{RUN}/credential_phish.parquet"
CHECKPOINT = f"results/checkpoints/{RUN}/state.pt"

pytestmark = pytest.mark.slow


def workflow_copy(root: Path) -> Path:
    copy_workflow(root)
    # Long enough that the kill lands between the first checkpoint (step 10) and the end.
    write_llama_slice_config(root, steps=300, checkpoint_every=10, eval_every=100)
    return root


def snakemake_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", TARGET, "--cores", "2", *extra, "--configfile", "slice.yaml"]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {seconds} s waiting for {what}")
        time.sleep(0.05)


def finetune_pids(root: Path) -> list[int]:
    """The fine-tuning script's process (Snakemake runs it from <root>/.snakemake/scripts/)."""
    found = subprocess.run(["pgrep", "-f", f"{root}/.snakemake/scripts/.*finetune.py"], capture_output=True,
                           text=True, timeout=10)
    return [int(pid) for pid in found.stdout.split()]


def test_a_fine_tuning_job_killed_with_sigterm_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    straight = workflow_copy(tmp_path / "straight")
    done = subprocess.run(snakemake_command(), cwd=straight, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]

    # Same inputs and base model; the fine-tuning and prediction jobs run again, interrupted.
    preempted = tmp_path / "preempted"
    shutil.copytree(straight, preempted, symlinks=True)
    shutil.rmtree(preempted / f"results/finetune/{RUN}")
    shutil.rmtree(preempted / f"results/predictions/{RUN}")
    job = subprocess.Popen(snakemake_command(), cwd=preempted, env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (preempted / CHECKPOINT).exists(), 300, "the first checkpoint")
        pids = finetune_pids(preempted)
        assert len(pids) == 1, f"expected one fine-tuning process, found {pids}"
        os.kill(pids[0], signal.SIGTERM)
        output, _ = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0, "Snakemake must report the preempted job as failed"
    assert "stopped by signal 15" in (preempted / f"results/logs/finetune/{RUN}.log").read_text()
    assert (preempted / CHECKPOINT).exists(), output[-3000:]
    assert not (preempted / f"results/finetune/{RUN}/adapter").exists()

    resumed = subprocess.run(snakemake_command(), cwd=preempted, env=ENV, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    summary = json.loads((preempted / f"results/finetune/{RUN}/summary.json").read_text())
    assert 10 <= summary["resumed_from_step"] < 300, summary
    assert not (preempted / CHECKPOINT).exists(), "the checkpoint is removed once training completes"

    ours = load_file(preempted / f"results/finetune/{RUN}/adapter/adapter_model.safetensors")
    theirs = load_file(straight / f"results/finetune/{RUN}/adapter/adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert (ours[name] == theirs[name]).all(), f"adapter weight {name} differs after resuming"
    logs = [pd.read_csv(root / f"results/finetune/{RUN}/train_log.csv").drop(columns="seconds")
            for root in (preempted, straight)]
    pd.testing.assert_frame_equal(*logs)
    pd.testing.assert_frame_equal(pd.read_parquet(preempted / TARGET), pd.read_parquet(straight / TARGET))
    with capsys.disabled():
        print(f"\n[preemption] SIGTERM at step {summary['resumed_from_step']} of 300: job failed, checkpoint kept; "
              "the rerun resumed and its adapter, training log and predictions equal the uninterrupted run's")
