"""Every speed benchmark of gendiag against its named baseline, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/run.py --results /tmp/bench-results          # full
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/run.py --quick                               # about a minute
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/run.py --only train predict --archs llama

Benchmarks (names start with the stage; one per architecture where it applies):

* train_<arch>    our QLoRA loop vs transformers.Trainer + PEFT + bitsandbytes NF4 (bench_train.py)
* predict_<arch>  our answer-position label scoring vs model.generate() + parse and a
                  text-generation pipeline + parse (bench_predict.py)
* shap_<arch>     our SHAP path vs shap + a transformers pipeline (shap_pipeline.py)
* patching_<arch> our batched activation patching vs transformer_lens.patching's per-component
                  loop (bench_patching.py)
* study_default   the default study from nothing in a fresh clone vs the 600 s goal (bench_study.py);
                  skipped under --quick unless selected with --only study

Ours and the baseline run back to back in the same run (train: in fresh processes, alternating;
the rest: in this process), with the same torch threads (2). Each benchmark prints one JSON line
(`name, ours, baseline, unit, ratio` and more) as soon as it finishes and appends it to
`benchmarks/results/run-<date>-cpu.jsonl`; a table follows at the end. Where a goal is missed,
a profile is written to `benchmarks/results/<name>-profile-<date>.txt` and named in the record.
Inputs are read from `--results` (default `results`): models/, finetune/, testsets/, datasets/
(the study needs none: it builds its own). Every record says how much of the CPU other processes
used meanwhile (`other_processes_cpu_share`); above `--max-contention` a benchmark is run again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ARCHS = ("llama", "gemma2", "mistral")
STAGES = ("train", "predict", "shap", "patching", "study")
# Goals as ratios (ours / baseline speed); None: no goal set, the ratio is reported.
GOALS = {"train": 2.0, "predict": 5.0, "shap": 5.0, "patching": None, "study": 1.0}
OUT_DIR = common.REPO / "benchmarks" / "results"

log = logging.getLogger("benchmarks.run")


# --------------------------------------------------------------------------------------------------
# One function per stage: the record of one benchmark
# --------------------------------------------------------------------------------------------------


def train_worker(impl: str, arch: str, steps: int, results: Path, profile: Path | None = None) -> dict | None:
    """One side of train_<arch> in a fresh process (its own RSS high-water mark)."""
    import bench_train

    command = [sys.executable, str(Path(bench_train.__file__)), "--impl", impl, "--arch", arch, "--steps", str(steps),
               "--results", str(results)]
    if profile:
        command += ["--profile", str(profile)]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"train worker {impl}/{arch} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    if profile:
        return None
    lines = [line for line in proc.stdout.splitlines() if line.startswith(bench_train.MARKER)]
    return json.loads(lines[-1][len(bench_train.MARKER) :])


def bench_train(arch: str, args, config: dict) -> dict:
    steps = args.train_steps or (20 if args.quick else 100)
    repeats = args.repeats or 1
    runs = {"ours": [], "baseline": []}
    load_before = common.loadavg()
    for _ in range(repeats):
        for impl in ("ours", "baseline"):
            runs[impl].append(train_worker(impl, arch, steps, args.results))
            log.info("train_%s %s: %.2f s, %.0f tokens/s", arch, impl, runs[impl][-1]["seconds"],
                     runs[impl][-1]["tokens_per_second"])
    best = {impl: max(r, key=lambda x: x["tokens_per_second"]) for impl, r in runs.items()}
    peak = {impl: max(x["peak_rss_above_imports_mb"] for x in r) for impl, r in runs.items()}
    ours, base = best["ours"], best["baseline"]
    return {
        "name": f"train_{arch}",
        "ours": round(ours["tokens_per_second"], 1),
        "baseline": round(base["tokens_per_second"], 1),
        "unit": "real tokens/s",
        "ratio": round(ours["tokens_per_second"] / base["tokens_per_second"], 2),
        "baseline_name": "transformers.Trainer + PEFT + bitsandbytes NF4, padded to max length, full-sequence LM loss",
        "peak_rss_mb": {"ours": max(x["peak_rss_mb"] for x in runs["ours"]),
                        "baseline": max(x["peak_rss_mb"] for x in runs["baseline"])},
        "peak_rss_above_imports_mb": peak,
        "memory_ratio": round(peak["baseline"] / peak["ours"], 2),
        "memory_measure": "getrusage ru_maxrss of a fresh process per run, minus its RSS after the shared imports"
                          " (max over repeats)",
        "seconds": {impl: [round(x["seconds"], 2) for x in r] for impl, r in runs.items()},
        "real_tokens": {"ours": ours["real_tokens"], "baseline": base["real_tokens"]},
        "padded_tokens_baseline": base["padded_tokens"],
        "val_accuracy": {"ours": ours["val_accuracy"], "baseline": base["val_accuracy"]},
        "final_train_loss": {impl: round(best[impl]["final_train_loss"], 4) for impl in best},
        "steps": steps,
        "batch_size": ours["batch_size"],
        "repeats": repeats,
        "arch": arch,
        "loadavg_1min": [load_before, common.loadavg()],
        "worker_loadavg_1min": {impl: [x["loadavg_1min"] for x in r] for impl, r in runs.items()},
    }


def profile_train(arch: str, args, path: Path, _record: dict) -> None:
    path.write_text(f"# train_{arch} profile ({dt.datetime.now().isoformat(timespec='seconds')}), 20 steps each\n\n")
    for impl in ("ours", "baseline"):
        train_worker(impl, arch, 20, args.results, profile=path)


def bench_predict(arch: str, args, config: dict) -> dict:
    import bench_predict

    per_testset = args.predict_messages or (32 if args.quick else None)
    repeats = args.repeats or (2 if args.quick else 3)
    return bench_predict.run(arch, args.results, config, per_testset, repeats)


def profile_predict(arch: str, args, path: Path, _record: dict) -> None:
    import bench_predict

    per_testset = args.predict_messages or (32 if args.quick else None)
    path.write_text(f"# predict_{arch} profile ({dt.datetime.now().isoformat(timespec='seconds')})\n\n"
                    + bench_predict.profile(arch, args.results, load_config(), per_testset))


def bench_shap(arch: str, args, config: dict) -> dict:
    import shap_pipeline

    from gendiag.prompts import PromptFormat

    if common.prompt_format(config) != PromptFormat() or int(config["prompt"]["max_length"]) != 256:
        raise RuntimeError("shap_pipeline.py uses the default prompt and max_length 256; the config differs")
    n_messages = args.shap_messages or (2 if args.quick else 8)
    max_evals = args.shap_max_evals or (100 if args.quick else int(config["shap"]["max_evals"]))
    record = shap_pipeline.run_benchmark(arch, n_messages, max_evals, batch_size=int(config["shap"]["batch_size"]),
                                         forward_batch_size=int(config["shap"]["forward_batch_size"]),
                                         threads=common.THREADS, results_dir=args.results)
    record.pop("versions", None)
    record["name"] = f"shap_{arch}"
    record["baseline_name"] = ("shap.Explainer over a TextClassificationPipeline of the 4-bit + LoRA model"
                               " (batch 1); baseline_merged: the same pipeline over our merged model")
    return record


def profile_shap(arch: str, args, path: Path, _record: dict) -> None:
    import shap_pipeline

    config = load_config()
    path.write_text(f"# shap_{arch} profile ({dt.datetime.now().isoformat(timespec='seconds')})\n\n"
                    + shap_pipeline.profile(arch, 4, args.shap_max_evals or int(config["shap"]["max_evals"]),
                                            int(config["shap"]["batch_size"]),
                                            int(config["shap"]["forward_batch_size"]), common.THREADS,
                                            args.results))


def bench_patching(arch: str, args, config: dict) -> dict:
    import bench_patching

    return bench_patching.run(arch, args.results, config, args.patching_pairs or (1 if args.quick else 4))


def bench_study(_arch, args, _config) -> dict:
    import bench_study

    return bench_study.run(cores=common.THREADS, keep=args.keep_study, keep_if_slow=not args.no_profile)


def profile_study(_arch, args, path: Path, record: dict) -> None:
    import bench_study

    if "clone" in record and record["succeeded"]:
        bench_study.profile(record, path, remove_clone=not args.keep_study)
        if not args.keep_study:
            record.pop("clone")


RUNNERS = {"train": bench_train, "predict": bench_predict, "shap": bench_shap, "patching": bench_patching,
           "study": bench_study}
PROFILERS = {"train": profile_train, "predict": profile_predict, "shap": profile_shap, "study": profile_study}


# --------------------------------------------------------------------------------------------------
# Selection, output
# --------------------------------------------------------------------------------------------------


def run_one(name: str, stage: str, arch: str | None, args, config: dict) -> dict:
    """One benchmark's record; run again (up to --retries times) while other processes took more
    than --max-contention of the CPU meanwhile (not the study: too long to repeat)."""
    earlier = []
    for attempt in range(args.retries + 1):
        with common.Contention() as contention:
            record = RUNNERS[stage](arch, args, config)
        record["other_processes_cpu_share"] = contention.share
        record["contended"] = contention.share > args.max_contention
        if not record["contended"] or stage == "study" or attempt == args.retries:
            break
        earlier.append({k: record.get(k) for k in ("ours", "baseline", "ratio", "other_processes_cpu_share")})
        log.warning("%s: other processes used %.0f%% of the CPU meanwhile (limit %.0f%%): running it again", name,
                    100 * contention.share, 100 * args.max_contention)
        time.sleep(args.retry_wait)
    if earlier:
        record["contended_attempts"] = earlier
    return record


def load_config() -> dict:
    return common.study_config()


def planned(args) -> list[tuple[str, str, str | None]]:
    """(name, stage, arch) of every selected benchmark, in run order."""
    plan = []
    for stage in STAGES:
        if stage == "study":
            plan.append(("study_default", stage, None))
        else:
            plan += [(f"{stage}_{arch}", stage, arch) for arch in args.archs]
    if args.only:
        plan = [p for p in plan if any(p[0].startswith(prefix) for prefix in args.only)]
    elif args.quick:
        plan = [p for p in plan if p[1] != "study"]
    return plan


def format_value(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def check_of(record: dict) -> str:
    """The equality check of a record, in a word."""
    if "identical_generate" in record:
        return "same labels" if record["identical_generate"] and record["identical_pipeline"] else "LABELS DIFFER"
    if "allclose" in record:
        return "allclose" if record["allclose"] else "NOT CLOSE"
    if "correlation" in record:
        return f"r={record['correlation']:.4f}"
    if "val_accuracy" in record:
        acc = record["val_accuracy"]
        return f"val acc {acc['ours']:.2f}/{acc['baseline']:.2f}"
    if "succeeded" in record:
        return "ok" if record["succeeded"] else "FAILED"
    return ""


def table(records: list[dict]) -> str:
    header = (f"{'name':<18} {'ours':>9} {'baseline':>9} {'unit':<14} {'ratio':>7} {'goal':>6} {'check':<22}"
              f" {'others':>6} {'load':>9}")
    lines = [header, "-" * len(header)]
    for r in records:
        if "error" in r:
            lines.append(f"{r['name']:<18} ERROR: {r['error'].splitlines()[-1][:90]}")
            continue
        goal = r.get("goal")
        load = r.get("loadavg_1min", [None, None])
        lines.append(f"{r['name']:<18} {format_value(r['ours']):>9} {format_value(r['baseline']):>9} {r['unit']:<14}"
                     f" {r['ratio']:>6.2f}x {('-' if goal is None else f'{goal:g}x'):>6} {check_of(r):<22}"
                     f" {r.get('other_processes_cpu_share', 0):>5.0%}{'!' if r.get('contended') else ' '}"
                     f" {load[0]:>4}/{load[-1]:<4}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, llama only, no study: a few minutes")
    parser.add_argument("--only", nargs="+", default=None, metavar="PREFIX",
                        help="benchmarks whose name starts with one of these (train, predict_llama, study, ...)")
    parser.add_argument("--archs", nargs="+", default=None, help=f"architectures (default {' '.join(ARCHS)};"
                        " llama under --quick)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="where the workflow's models, adapters, test sets and datasets are (default results)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON lines file to append to (default benchmarks/results/run-<date>-cpu.jsonl)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of train (default 1) and predict"
                        " (default 3; 2 quick); the best of each side counts")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="optimizer steps of both sides (default 100; 20 quick; the study runs 300, Gemma 2 600)")
    parser.add_argument("--predict-messages", type=int, default=None, help="per test set (default all; 32 quick)")
    parser.add_argument("--shap-messages", type=int, default=None, help="default 8; 2 quick")
    parser.add_argument("--shap-max-evals", type=int, default=None,
                        help="default: the study's shap.max_evals; 100 quick")
    parser.add_argument("--patching-pairs", type=int, default=None, help="pairs per arch (default 4; 1 quick)")
    parser.add_argument("--max-contention", type=float, default=0.15,
                        help="share of the CPU other processes may use during a benchmark before it is run again"
                        " (default 0.15)")
    parser.add_argument("--retries", type=int, default=None,
                        help="reruns of a contended benchmark (default 2; 0 quick)")
    parser.add_argument("--retry-wait", type=float, default=30.0, help="seconds to wait before a rerun (default 30)")
    parser.add_argument("--no-profile", action="store_true", help="write no profile when a goal is missed")
    parser.add_argument("--keep-study", action="store_true", help="keep the study's clone (printed in its record)")
    parser.add_argument("--config", type=Path, default=None,
                        help="the config the --results were built with (default config/config.yaml)")
    args = parser.parse_args(argv)
    if args.config:  # the train benchmark's worker processes read it too
        os.environ[common.CONFIG_ENV] = str(args.config.resolve())
    args.archs = args.archs or (["llama"] if args.quick else list(ARCHS))
    args.retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    args.results = args.results.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    common.setup_torch()
    import transformers

    transformers.logging.set_verbosity_error()
    for name in ("gendiag", "shap"):
        logging.getLogger(name).setLevel(logging.WARNING)

    date = dt.date.today().isoformat()
    output = args.output or OUT_DIR / f"run-{date}-cpu.jsonl"
    output.parent.mkdir(parents=True, exist_ok=True)
    config = load_config()
    plan = planned(args)
    if not plan:
        parser.error(f"--only {args.only} selects no benchmark")
    log.info("running %s", ", ".join(name for name, _, _ in plan))
    started = time.perf_counter()
    run_started = dt.datetime.now().isoformat(timespec="seconds")
    records = []
    for name, stage, arch in plan:
        t0 = time.perf_counter()
        try:
            record = run_one(name, stage, arch, args, config)
        except Exception as error:  # one failing benchmark must not lose the others
            log.error("%s failed: %s", name, error)
            record = {"name": name, "error": traceback.format_exc()[-2000:]}
        goal = GOALS[stage]
        if "error" not in record:
            record["goal"] = goal
            record["goal_met"] = None if goal is None else bool(record["ratio"] >= goal)
            if record["goal_met"] is False and stage in PROFILERS and not args.no_profile:
                path = OUT_DIR / f"{name}-profile-{date}{'-quick' if args.quick else ''}.txt"
                try:
                    PROFILERS[stage](arch, args, path, record)
                    record["profile"] = str(path.relative_to(common.REPO))
                except Exception:
                    log.exception("profiling %s failed", name)
        record.update({"quick": args.quick, "date": date, "run_started": run_started, "device": "cpu",
                       "threads": common.THREADS, "cpu_count": os.cpu_count(),
                       "bench_seconds": round(time.perf_counter() - t0, 1), "results_dir": str(args.results)})
        records.append(record)
        line = json.dumps(record)
        print(line, flush=True)
        with open(output, "a") as f:
            f.write(line + "\n")
    versions = common.versions()
    print()
    print(f"gendiag benchmarks, {date}, CPU ({os.cpu_count()} cores, {common.THREADS} torch threads)"
          f"{', quick' if args.quick else ''}; ratio = ours / baseline speed;"
          " others = CPU share other processes used meanwhile (! = above --max-contention: do not quote);"
          " load = 1-min load average before/after")
    print(table(records))
    print(f"versions: {json.dumps(versions)}")
    print(f"appended {len(records)} record(s) to {output}; {time.perf_counter() - started:.0f} s in all")
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
