"""study_default: the default study's wall time, from nothing, in a fresh clone.

`git clone` of this repository's HEAD into a temporary folder (so the run never touches this
checkout's `results/`; uncommitted changes are not in it), this checkout's `.venv` linked into it,
`PYTHONPATH=<clone>/src` (the venv's editable install points at this checkout's `src/`; the clone's
jobs must import the clone's library), then `HF_HUB_OFFLINE=1 .venv/bin/snakemake --cores N` in the
clone, timed. The baseline is the project's goal, 600 s, not another program. The per-rule
times come from the clone's `results/benchmarks/**.tsv` (Snakemake's `benchmark:` files).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import common

GOAL_SECONDS = 600.0


def rule_times(benchmarks: Path) -> tuple[dict[str, dict], list[dict]]:
    """Seconds per rule (sum over its jobs, job count, max_rss) and every job's row."""
    jobs = []
    for path in sorted(benchmarks.rglob("*.tsv")):
        with open(path) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows:
            continue
        row = rows[-1]
        relative = path.relative_to(benchmarks).with_suffix("")
        jobs.append({"rule": relative.parts[0], "job": str(relative), "s": float(row["s"]),
                     "max_rss_mb": float(row["max_rss"]) if row.get("max_rss", "NA") not in ("NA", "-") else None})
    rules: dict[str, dict] = {}
    for job in jobs:
        entry = rules.setdefault(job["rule"], {"s": 0.0, "jobs": 0, "max_rss_mb": 0.0})
        entry["s"] += job["s"]
        entry["jobs"] += 1
        entry["max_rss_mb"] = max(entry["max_rss_mb"], job["max_rss_mb"] or 0.0)
    return rules, jobs


def run(cores: int = common.THREADS, keep: bool = False, top: int = 10, keep_if_slow: bool = False) -> dict:
    """The record of one study run; the clone is removed unless `keep`, the run failed, or it missed
    the goal and `keep_if_slow` (for `profile`, which removes it)."""
    tmp = Path(tempfile.mkdtemp(prefix="gendiag-study-"))
    clone = tmp / "gendiag"
    head = subprocess.run(["git", "-C", str(common.REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(common.REPO), str(clone)], check=True)
    (clone / ".venv").symlink_to(common.REPO / ".venv")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(clone / "src")}
    log_path = tmp / "snakemake.log"
    load_before = common.loadavg()
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run([str(clone / ".venv" / "bin" / "snakemake"), "--cores", str(cores)], cwd=clone,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    load_after = common.loadavg()
    rules, jobs = rule_times(clone / "results" / "benchmarks")
    tail = log_path.read_text().splitlines()[-15:]
    n_jobs_done = sum(1 for line in log_path.read_text().splitlines() if line.startswith("Finished job"))
    by_time = sorted(rules.items(), key=lambda item: -item[1]["s"])
    record = {
        "name": "study_default",
        "ours": round(seconds, 1),
        "baseline": GOAL_SECONDS,
        "unit": "s",
        "ratio": round(GOAL_SECONDS / seconds, 2),
        "baseline_name": "goal: the default study in 600 s (not a program)",
        "succeeded": proc.returncode == 0,
        "returncode": proc.returncode,
        "cores": cores,
        "commit": head,
        "benchmarked_jobs": len(jobs),
        "finished_jobs_in_log": n_jobs_done,
        "sum_of_job_seconds": round(sum(j["s"] for j in jobs), 1),
        "top_rules": [{"rule": name, "s": round(v["s"], 1), "jobs": v["jobs"], "max_rss_mb": round(v["max_rss_mb"])}
                      for name, v in by_time[:top]],
        "top_jobs": [{"job": j["job"], "s": round(j["s"], 1)} for j in sorted(jobs, key=lambda j: -j["s"])[:top]],
        "loadavg_1min": [load_before, load_after],
    }
    if proc.returncode != 0:
        record["log_tail"] = tail
    if keep or proc.returncode != 0 or (keep_if_slow and seconds > GOAL_SECONDS):
        record["clone"] = str(clone)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _cprofile(fn, limit: int = 30) -> tuple[float, str]:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(fn)
    seconds = time.perf_counter() - started
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(limit)
    return seconds, stream.getvalue()


def profile(record: dict, path: Path, arch: str = "llama", recipe: str = "generalist",
            testset: str = "credential_phish", remove_clone: bool = True) -> None:
    """Why the study takes as long as it does: its per-rule times, then cProfile of the library calls
    of the two rules that take longest in the default study (circuits_analyse, shap_explain) for one
    job each, run in this process on the clone's results with 1 torch thread (the rules' threads)."""
    import pandas as pd
    import torch

    clone = Path(record["clone"])
    results = clone / "results"
    config = common.study_config(clone / "config" / "config.yaml")
    rules, jobs = rule_times(results / "benchmarks")
    total = sum(v["s"] for v in rules.values())
    out = [f"# study_default profile ({time.strftime('%Y-%m-%dT%H:%M:%S')}), commit {record['commit']}", "",
           f"wall {record['ours']} s with --cores {record['cores']}; sum of job seconds {total:.0f} s"
           f" (sum / cores = {total / record['cores']:.0f} s); other processes used"
           f" {record.get('other_processes_cpu_share', 'n/a')} of the CPU meanwhile", "",
           "## seconds per rule (Snakemake benchmark files)", "",
           f"{'rule':<32} {'s':>8} {'jobs':>5} {'s/job':>7} {'share':>6}"]
    for name, v in sorted(rules.items(), key=lambda item: -item[1]["s"]):
        out.append(f"{name:<32} {v['s']:>8.1f} {v['jobs']:>5} {v['s'] / v['jobs']:>7.1f} {v['s'] / total:>6.1%}")
    torch.set_num_threads(int(config["compute"]["threads"]))
    prompt = common.prompt_format(config)
    max_length = int(config["prompt"]["max_length"])
    family = config["models"][arch]["family"]
    base = results / "models" / arch / "base"
    adapter = results / "finetune" / arch / recipe / "standard" / "seed0" / "adapter"
    predictions_dir = results / "predictions" / arch / recipe / "standard" / "seed0"
    quantization = dict(config["training"]["quantization"])

    def circuits():
        from gendiag.circuits.bridge import wrap_for_analysis
        from gendiag.circuits.study import analyse_model, build_pairs, merge_agreement
        from gendiag.models.loading import load_tokenizer
        from gendiag.models.merge import load_merged

        names = config["circuits"].get("testsets") or config["evaluation"]["testsets"] or sorted(config["corpora"])
        testsets = {n: pd.read_parquet(results / "testsets" / f"{n}.parquet") for n in names}
        predictions = {n: pd.read_parquet(predictions_dir / f"{n}.parquet") for n in names}
        tokenizer = load_tokenizer(base)
        merged = load_merged(base, family, adapter, quantization, torch.device("cpu"), torch.float32)
        merge_agreement(merged, tokenizer, prompt, max_length, int(config["evaluation"]["batch_size"]), testsets,
                        predictions)
        model = wrap_for_analysis(merged, tokenizer, family, prompt)
        pairs, _ = build_pairs(testsets, tokenizer, prompt, max_length, config["circuits"])
        analyse_model(model, tokenizer, pairs, config["circuits"])

    def shap_explain():
        from gendiag.attribution.explain import LogOddsFunction
        from gendiag.attribution.study import attribute_testset
        from gendiag.models.loading import load_tokenizer
        from gendiag.models.merge import load_merged

        settings = dict(config["shap"])
        model = load_merged(base, family, adapter, quantization, torch.device("cpu"), torch.float32)
        tokenizer = load_tokenizer(base)
        function = LogOddsFunction(model, tokenizer, prompt, max_length, int(settings["forward_batch_size"]))
        attribute_testset(function, tokenizer, prompt, pd.read_parquet(results / "testsets" / f"{testset}.parquet"),
                          pd.read_parquet(predictions_dir / f"{testset}.parquet"), settings, max_length)

    for title, fn in ((f"circuits_analyse {arch}/{recipe}/standard/seed0", circuits),
                      (f"shap_explain {arch}/{recipe}/standard/seed0/{testset}", shap_explain)):
        seconds, table = _cprofile(fn)
        out += ["", f"## cProfile of {title}'s library calls: {seconds:.1f} s under the profiler", "", table]
    path.write_text("\n".join(out) + "\n")
    if remove_clone:
        shutil.rmtree(clone.parent, ignore_errors=True)
