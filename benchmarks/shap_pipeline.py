"""Benchmark: gendiag's SHAP path against what a researcher would run with shap + transformers.

All paths explain the same function, log p(malicious) - log p(legitimate) at the answer position of
the classification prompt of a QLoRA fine-tuned tiny model, with shap's Partition explainer, the
same masker type (`LayoutText`), the same `max_evals` and the same shap batch size (64). Only the
model-function path differs:

* ours: `gendiag.attribution.explain.LogOddsFunction` + `explain_messages` over the merged model
  (`gendiag.models.merge.load_merged`: NF4 base dequantised to fp32, LoRA merged in) -- each distinct
  masked message of one explanation is run once, in length-sorted, left-padded forward batches of 8,
  one answer-position logit row each (`gendiag.models.inputs`).
* baseline (headline, `baseline` / `ratio`): the fine-tuned model as it was trained and evaluated --
  the 4-bit NF4 base with its LoRA adapter beside it (`gendiag.evaluate.predict.load_for_prediction`,
  i.e. `load_causal_lm(..., {"load_in_4bit": True, ...})` + `peft.PeftModel.from_pretrained`) --
  explained by `shap.Explainer(shap.models.TransformersPipeline(pipe, rescale_to_logits=True))` over a
  `TextClassificationPipeline` (batch size 1: one forward pass per masked message, duplicates
  included).
* baseline_merged (`baseline_merged` / `ratio_vs_merged_pipeline`): the same pipeline over our merged
  fp32 model, so the difference to ours is only batching + the memory of evaluated texts.

Each pipeline's model is an `AutoModelForSequenceClassification` sharing the causal LM's body (for
the 4-bit path: the NF4 layers with the LoRA layers peft injected into them); its 2-row score head is
the lm_head rows of the two label words (with Gemma 2's final logit soft-capping), so its logits are
the label-word logits at the last token, and with two classes logit(softmax_malicious) equals the
log-odds. The script checks that each pipeline agrees with ours on unmasked messages before timing
(merged: |diff| <= 1e-4; 4-bit: <= 1e-3, NF4 matmuls vs dequantised fp32 ones) and reports the
largest difference and the correlation of each baseline's attributions with ours.

Run (from the repository root):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/shap_pipeline.py            # 3 archs, 8 messages, 500 evals
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/shap_pipeline.py --quick    # 3 messages, 100 evals

`run_benchmark(arch, n_messages, max_evals, ...)` returns the result record of one architecture.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import bitsandbytes
import numpy as np
import pandas as pd
import peft
import shap
import torch
import transformers
from transformers import AutoModelForSequenceClassification, TextClassificationPipeline

from gendiag.attribution.explain import LayoutText, LogOddsFunction, explain_messages, visible_text
from gendiag.evaluate.predict import load_for_prediction
from gendiag.models.loading import load_tokenizer
from gendiag.models.merge import load_merged
from gendiag.prompts import PromptFormat

ARCHS = ("llama", "gemma2", "mistral")
QUANTIZATION = {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True}
REPO = Path(__file__).resolve().parent.parent
LABELS = {0: "legitimate", 1: "malicious"}

log = logging.getLogger("benchmarks.shap_pipeline")


# --------------------------------------------------------------------------------------------------
# The naive path: a sequence classifier over the same causal LM, a pipeline, shap's pipeline wrapper
# --------------------------------------------------------------------------------------------------


class LabelWordHead(torch.nn.Module):
    """The lm_head rows of (legitimate, malicious), with the causal LM's final soft-capping if any."""

    def __init__(self, lm_head: torch.nn.Linear, label_ids: tuple[int, int], softcap: float | None):
        super().__init__()
        rows = list(label_ids)
        self.proj = torch.nn.Linear(lm_head.in_features, 2, bias=lm_head.bias is not None,
                                    device=lm_head.weight.device, dtype=lm_head.weight.dtype)
        with torch.no_grad():
            self.proj.weight.copy_(lm_head.weight[rows])
            if lm_head.bias is not None:
                self.proj.bias.copy_(lm_head.bias[rows])
        self.softcap = softcap

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.proj(hidden)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def label_word_classifier(causal_lm: torch.nn.Module, label_ids: tuple[int, int]) -> torch.nn.Module:
    """An `AutoModelForSequenceClassification` sharing `causal_lm`'s body, whose two logits are the
    label words' logits (pooled at the last non-pad token, as transformers' sequence classifiers do).

    `causal_lm` is a `*ForCausalLM` (for a `PeftModel`, its `get_base_model()`: the body then holds
    the LoRA layers peft injected, so the classifier computes what the PeftModel computes)."""
    if type(causal_lm.lm_head) is not torch.nn.Linear:  # a quantised head could not be sliced by rows
        raise TypeError(f"lm_head is a {type(causal_lm.lm_head).__name__}, not a plain nn.Linear")
    config = copy.deepcopy(causal_lm.config)
    config.num_labels = 2
    config.id2label = dict(LABELS)
    config.label2id = {name: index for index, name in LABELS.items()}
    config.problem_type = "single_label_classification"
    if hasattr(config, "quantization_config"):  # the body is the (4-bit) one given; build no quantised copy
        del config.quantization_config
    with torch.device("meta"):  # the body is replaced by the causal LM's own; don't allocate a second one
        classifier = AutoModelForSequenceClassification.from_config(config)
    classifier.model = causal_lm.model
    classifier.score = LabelWordHead(causal_lm.lm_head, label_ids, getattr(config, "final_logit_softcapping", None))
    leftover = [name for name, t in [*classifier.named_parameters(), *classifier.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"sequence classifier still has meta tensors: {leftover[:5]}")
    return classifier.eval()


class PromptClassificationPipeline(TextClassificationPipeline):
    """`text-classification` with the study's prompt around each message.

    Scores are the softmax over the two label logits computed in float64 (transformers' own
    postprocess works in float32, whose rounding near p = 1 moves logit(p) by more than 1e-4 once the
    log-odds pass ~5); otherwise this is the stock pipeline.
    """

    def __init__(self, *args, prompt: PromptFormat, **kwargs):
        self.prompt = prompt
        super().__init__(*args, **kwargs)

    def preprocess(self, inputs, **tokenizer_kwargs):
        return super().preprocess(self.prompt.render(str(inputs)), **tokenizer_kwargs)

    def postprocess(self, model_outputs, function_to_apply=None, top_k=1, _legacy=True):
        logits = model_outputs["logits"][0].double().numpy()
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
        return [{"label": self.model.config.id2label[i], "score": float(s)} for i, s in enumerate(scores)]


class CountingPipelineModel(shap.models.TransformersPipeline):
    """shap's pipeline wrapper, counting the masked messages it is asked to score."""

    rows = 0

    def __call__(self, strings):
        self.rows += len(strings)
        return super().__call__(strings)


def naive_function(causal_lm, tokenizer, prompt: PromptFormat) -> CountingPipelineModel:
    classifier = label_word_classifier(causal_lm, prompt.label_token_ids(tokenizer))
    pipe = PromptClassificationPipeline(model=classifier, tokenizer=tokenizer, device=torch.device("cpu"),
                                        prompt=prompt, top_k=None, function_to_apply="softmax", batch_size=1)
    return CountingPipelineModel(pipe, rescale_to_logits=True)


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


def load_messages(testset: Path, n: int, tokenizer, prompt: PromptFormat, max_length: int) -> pd.DataFrame:
    """The first n + 1 messages of the test set, cut to what the prompt keeps (row 0 is the warm-up)."""
    frame = pd.read_parquet(testset, columns=["uid", "text"]).head(n + 1).reset_index(drop=True)
    if len(frame) < n + 1:
        raise ValueError(f"{testset} has {len(frame)} messages; need {n + 1} (one for warm-up)")
    frame["text"] = [visible_text(t, tokenizer, prompt, max_length) for t in frame["text"]]
    return frame


def check_same_function(ours: LogOddsFunction, naive: CountingPipelineModel, texts: list[str],
                        tolerance: float, name: str) -> float:
    """Largest |ours - naive| on unmasked messages; raises when above `tolerance`."""
    a = np.asarray(ours(texts), dtype=np.float64)
    both = np.asarray(naive(texts), dtype=np.float64)
    b, b_legit = both[:, 1], both[:, 0]
    diff = float(np.max(np.abs(a - b)))
    log.info("function check (%s) on %d messages: log-odds %s; max |ours - naive| = %.2e", name, len(texts),
             np.round(a, 3).tolist(), diff)
    assert diff <= tolerance, f"{name}: the paths explain different functions: max |diff| {diff:.3g} > {tolerance}"
    assert np.allclose(b_legit, -b, atol=tolerance), f"{name}: logit(p_legitimate) != -logit(p_malicious)"
    return diff


def explain_naive(naive: CountingPipelineModel, masker, warm_text: str, texts: list[str], max_evals: int,
                  batch_size: int) -> dict:
    """shap.Explainer over a pipeline wrapper: one warm-up explanation, then every text timed as a whole."""
    explainer = shap.Explainer(naive, masker, algorithm="partition")
    explainer([warm_text], max_evals=max_evals, batch_size=batch_size, silent=True)
    naive.rows = 0
    started = time.perf_counter()
    explanations = [explainer([text], max_evals=max_evals, batch_size=batch_size, silent=True) for text in texts]
    seconds = time.perf_counter() - started
    rows = naive.rows
    values, additivity = [], []
    for text, explanation in zip(texts, explanations, strict=True):
        v = np.asarray(explanation.values[0], dtype=np.float64)[:, 1]
        base = float(np.asarray(explanation.base_values[0]).reshape(-1)[1])
        additivity.append(abs(v.sum() + base - float(naive([text])[0, 1])))
        values.append(v)
    return {"seconds": seconds, "rows": rows, "values": values, "additivity": max(additivity)}


def correlations(ours_values: list[np.ndarray], other_values: list[np.ndarray]) -> tuple[float, float]:
    """Pearson's r over all messages' attributions concatenated, and the smallest per-message r."""
    a, b = np.concatenate(ours_values), np.concatenate(other_values)
    if a.shape != b.shape:
        raise RuntimeError(f"{a.size} attributions against {b.size}")
    per_message = [float(np.corrcoef(x, y)[0, 1]) for x, y in zip(ours_values, other_values, strict=True)]
    return float(np.corrcoef(a, b)[0, 1]), min(per_message)


def run_benchmark(
    arch: str,
    n_messages: int = 8,
    max_evals: int = 500,
    *,
    family: str | None = None,
    batch_size: int = 64,
    forward_batch_size: int = 8,
    threads: int | None = None,
    testset: str = "credential_phish",
    max_length: int = 256,
    results_dir: str | Path = REPO / "results",
    adapter: str = "generalist/standard/seed0",
    tolerance_merged: float = 1e-4,
    tolerance_4bit: float = 1e-3,
) -> dict:
    """Time the three SHAP paths on `n_messages` messages of one architecture; the result record.

    Per path: one warm-up explanation (not timed), then every message explained and timed as a
    whole. `ours`, `baseline` (the 4-bit + LoRA pipeline) and `baseline_merged` (the pipeline over
    our merged model) are seconds per message; `ratio` = baseline / ours,
    `ratio_vs_merged_pipeline` = baseline_merged / ours; `correlation` (`_vs_merged_pipeline`) is
    Pearson's r of ours and that baseline's attributions, concatenated over all messages.

    `batch_size` is shap's (masked messages per call of the explained function, the same for all
    paths, as it steers Partition's search); `forward_batch_size` is how many of them our path puts
    in one forward pass; `threads` (default `os.cpu_count()`) applies to all paths.
    """
    threads = threads or os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    torch.set_num_threads(threads)
    results_dir = Path(results_dir)
    family = family or arch
    base_dir = results_dir / "models" / arch / "base"
    adapter_dir = results_dir / "finetune" / arch / adapter / "adapter"
    cpu = torch.device("cpu")
    prompt = PromptFormat()
    tokenizer = load_tokenizer(base_dir)
    merged = load_merged(base_dir, family, adapter_dir, QUANTIZATION, cpu, torch.float32)
    qlora = load_for_prediction(base_dir, family, adapter_dir, QUANTIZATION, cpu, torch.float32)
    messages = load_messages(results_dir / "testsets" / f"{testset}.parquet", n_messages, tokenizer, prompt,
                             max_length)
    warm_text, texts = messages["text"].iloc[0], messages["text"].iloc[1:].tolist()
    uids = messages["uid"].iloc[1:].tolist()

    ours = LogOddsFunction(merged, tokenizer, prompt, max_length, forward_batch_size)
    naive_merged = naive_function(merged, tokenizer, prompt)
    naive_4bit = naive_function(qlora.get_base_model(), tokenizer, prompt)
    check_merged = check_same_function(ours, naive_merged, [warm_text, *texts], tolerance_merged, "merged")
    check_4bit = check_same_function(ours, naive_4bit, [warm_text, *texts], tolerance_4bit, "4-bit")

    # ours: the workflow's own call (it also scores f(x) once per message and builds its tables)
    explain_messages(ours, tokenizer, [warm_text], ["warm-up"], max_evals=max_evals, batch_size=batch_size)
    ours.rows = ours.evaluated = 0
    started = time.perf_counter()
    tokens, summary = explain_messages(ours, tokenizer, texts, uids, max_evals=max_evals, batch_size=batch_size)
    ours_seconds = time.perf_counter() - started
    ours_rows, ours_evaluated = ours.rows, ours.evaluated
    ours_values = np.split(tokens["shap"].to_numpy(np.float64), np.cumsum(summary["n_tokens"])[:-1])

    # the baselines: shap.Explainer over the pipeline wrapper, the same masker type, shap batch size, budget
    masker = LayoutText(tokenizer)
    merged_run = explain_naive(naive_merged, masker, warm_text, texts, max_evals, batch_size)
    qlora_run = explain_naive(naive_4bit, masker, warm_text, texts, max_evals, batch_size)
    corr_4bit, min_corr_4bit = correlations(ours_values, qlora_run["values"])
    corr_merged, min_corr_merged = correlations(ours_values, merged_run["values"])

    n = len(texts)
    ours_s, qlora_s, merged_s = ours_seconds / n, qlora_run["seconds"] / n, merged_run["seconds"] / n
    return {
        "name": f"shap_partition_{arch}" + ("" if forward_batch_size == 8 else f"_fb{forward_batch_size}"),
        "ours": round(ours_s, 4),
        "baseline": round(qlora_s, 4),
        "unit": "s/message",
        "ratio": round(qlora_s / ours_s, 2),
        "correlation": round(corr_4bit, 6),
        "min_message_correlation": round(min_corr_4bit, 6),
        "baseline_4bit": round(qlora_s, 4),
        "baseline_merged": round(merged_s, 4),
        "ratio_vs_merged_pipeline": round(merged_s / ours_s, 2),
        "correlation_vs_merged_pipeline": round(corr_merged, 6),
        "min_message_correlation_vs_merged_pipeline": round(min_corr_merged, 6),
        "function_check_max_abs_diff": check_4bit,
        "function_check_max_abs_diff_merged": check_merged,
        "max_additivity_error_ours": float(summary["additivity_error"].max()),
        "max_additivity_error_baseline": qlora_run["additivity"],
        "max_additivity_error_baseline_merged": merged_run["additivity"],
        "evals_per_message_ours": ours_rows / n,
        "forward_rows_per_message_ours": ours_evaluated / n,
        "evals_per_message_baseline": qlora_run["rows"] / n,
        "evals_per_message_baseline_merged": merged_run["rows"] / n,
        "mean_tokens": float(summary["n_tokens"].mean()),
        "arch": arch,
        "n_messages": n,
        "max_evals": max_evals,
        "batch_size": batch_size,
        "forward_batch_size": forward_batch_size,
        "threads": threads,
        "testset": testset,
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "shap": shap.__version__, "peft": peft.__version__,
                     "bitsandbytes": bitsandbytes.__version__, "python": platform.python_version()},
    }


def profile(arch: str, n_messages: int, max_evals: int, batch_size: int, forward_batch_size: int, threads: int,
            results_dir: str | Path = REPO / "results", testset: str = "credential_phish",
            adapter: str = "generalist/standard/seed0", max_length: int = 256) -> str:
    """Where our SHAP path spends its time (for a missed goal): cProfile by cumulative time, then the
    torch operator table, over `n_messages` explanations after a warm-up."""
    import cProfile
    import io
    import pstats

    torch.set_num_threads(threads)
    results_dir = Path(results_dir)
    base_dir = results_dir / "models" / arch / "base"
    tokenizer = load_tokenizer(base_dir)
    merged = load_merged(base_dir, arch, results_dir / "finetune" / arch / adapter / "adapter", QUANTIZATION,
                         torch.device("cpu"), torch.float32)
    prompt = PromptFormat()
    messages = load_messages(results_dir / "testsets" / f"{testset}.parquet", n_messages + 1, tokenizer, prompt,
                             max_length)
    ours = LogOddsFunction(merged, tokenizer, prompt, max_length, forward_batch_size)
    texts, uids = messages["text"].tolist(), messages["uid"].tolist()
    explain_messages(ours, tokenizer, texts[:1], uids[:1], max_evals=max_evals, batch_size=batch_size)  # warm-up
    out = io.StringIO()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as ops:
        profiler.enable()
        explain_messages(ours, tokenizer, texts[1:], uids[1:], max_evals=max_evals, batch_size=batch_size)
        profiler.disable()
    seconds = time.perf_counter() - started
    out.write(f"## ours: {n_messages} explanations, {seconds:.2f} s (profilers on), max_evals {max_evals},"
              f" shap batch {batch_size}, forward batch {forward_batch_size}, {threads} threads\n\n")
    out.write("### cProfile, by cumulative time\n\n")
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
    out.write("\n### torch operators, by self CPU time\n\n")
    out.write(ops.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return out.getvalue()


def format_table(records: list[dict]) -> str:
    header = (f"{'arch':<8} {'fwd batch':>9} {'ours s/msg':>10} {'4-bit s/msg':>11} {'ratio':>6} {'corr':>8}"
              f" {'merged s/msg':>12} {'ratio':>6} {'corr':>8} {'rows/msg':>8} {'fwd/msg':>7}")
    lines = [header, "-" * len(header)]
    for r in records:
        lines.append(f"{r['arch']:<8} {r['forward_batch_size']:>9} {r['ours']:>10.3f} {r['baseline']:>11.3f}"
                     f" {r['ratio']:>5.1f}x {r['correlation']:>8.5f} {r['baseline_merged']:>12.3f}"
                     f" {r['ratio_vs_merged_pipeline']:>5.1f}x {r['correlation_vs_merged_pipeline']:>8.5f}"
                     f" {r['evals_per_message_baseline']:>8.0f} {r['forward_rows_per_message_ours']:>7.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), help="architectures (results/models/<arch>)")
    parser.add_argument("--messages", type=int, default=None, help="messages per arch (default 8; 3 with --quick)")
    parser.add_argument("--max-evals", type=int, default=None, help="shap budget (default 500; 100 with --quick)")
    parser.add_argument("--batch-size", type=int, default=64, help="shap's batch size (all paths)")
    parser.add_argument("--forward-batch-sizes", type=int, nargs="+", default=[8],
                        help="our path's forward batch size(s), one record each (default 8)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch threads for all paths (default os.cpu_count(), here {os.cpu_count()})")
    parser.add_argument("--testset", default="credential_phish")
    parser.add_argument("--results-dir", type=Path, default=REPO / "results")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer messages, smaller budget")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON lines file (default benchmarks/results/shap_pipeline-<date>-cpu[-quick].jsonl)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.logging.set_verbosity_error()

    n_messages = args.messages or (3 if args.quick else 8)
    max_evals = args.max_evals or (100 if args.quick else 500)
    threads = args.threads or os.cpu_count() or 1
    date = dt.date.today().isoformat()
    output = args.output or REPO / "benchmarks" / "results" / (
        f"shap_pipeline-{date}-cpu{'-quick' if args.quick else ''}.jsonl")

    records = []
    for arch in args.archs:
        for forward_batch_size in args.forward_batch_sizes:
            record = run_benchmark(arch, n_messages, max_evals, batch_size=args.batch_size,
                                   forward_batch_size=forward_batch_size, threads=threads,
                                   testset=args.testset, results_dir=args.results_dir)
            record["date"] = date
            records.append(record)
            print(json.dumps(record), flush=True)
    print()
    print(f"SHAP Partition, {n_messages} messages of {args.testset}, max_evals {max_evals}, {threads} thread(s), "
          "CPU; ratio = pipeline / ours; corr = Pearson r of the pipeline's attributions with ours")
    print(format_table(records))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
