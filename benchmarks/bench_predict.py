"""predict_<arch>: our label scoring against generate-and-parse and a text-generation pipeline.

All three paths run the model the study evaluates, in one process, on the same messages (every
test set's messages, cut beforehand to what the prompt keeps, so every path sees the same tokens):
the 4-bit NF4 base with its LoRA adapter -- for ours loaded by `gendiag.evaluate.predict.load_for_prediction`,
for the baselines by `standard_model` (the same today, but a faster library loader would show here).

* ours: `gendiag.evaluate.predict.predict_log_odds` (length-sorted, left-padded batches of the
  study's `evaluation.batch_size`, one forward pass each, the LM head at the answer position only,
  the label words' logits compared); label = log-odds >= 0 (p >= 0.5, the study's threshold).
* generate: `tokenizer(prompts, padding=True)` + `model.generate(max_new_tokens=1, do_sample=False)`
  in batches of the same size, in file order, then the new token decoded and parsed as a label
  word; `max_new_tokens` = the longest label word in tokens (1 for the tiny tokenizers), the
  least any generate-and-parse recipe can ask for.
* pipeline: `transformers.pipeline("text-generation")` over the same model and tokenizer with the
  same generation settings and `return_full_text=False`, at its default batch size (1), parsed
  the same way.

Each repeat runs the three paths back to back (ours, generate, pipeline) after one untimed warm-up
batch each; the best time of each path over the repeats is reported (contention only ever slows a
run down). Predictions are compared message by message: `identical_generate` / `identical_pipeline`
are true when every message gets the same label (a reply that parses to no label word counts as
different).
"""

from __future__ import annotations

import time
from pathlib import Path

import common
import numpy as np
import pandas as pd


def parse_label(reply: str, label_words: tuple[str, str]) -> int:
    """0 / 1 for a reply that starts with a label word, -1 otherwise."""
    word = reply.strip().lower()
    for label, candidate in enumerate(label_words):
        if word.startswith(candidate.strip().lower()):
            return label
    return -1


def load_messages(results: Path, testsets: list[str], per_testset: int | None) -> list[str]:
    frames = [pd.read_parquet(results / "testsets" / f"{name}.parquet", columns=["text"]) for name in testsets]
    if per_testset:
        frames = [frame.head(per_testset) for frame in frames]
    return pd.concat(frames, ignore_index=True)["text"].tolist()


def standard_model(base_dir, family, adapter_dir, quantization):
    """The baselines' model, loaded the standard way: the NF4 base (the library's loader, for its
    bitsandbytes CPU fix) + `PeftModel.from_pretrained` (today what `load_for_prediction` does)."""
    import torch
    from peft import PeftModel

    from gendiag.models.loading import load_causal_lm

    base = load_causal_lm(base_dir, family, quantization, torch.device("cpu"), torch.float32)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def run(arch: str, results: Path, config: dict, per_testset: int | None, repeats: int,
        recipe: str = "generalist") -> dict:
    import torch
    import transformers

    from gendiag.attribution.explain import visible_text
    from gendiag.evaluate.predict import load_for_prediction, predict_log_odds
    from gendiag.models.loading import load_tokenizer

    common.setup_torch()
    prompt = common.prompt_format(config)
    max_length = int(config["prompt"]["max_length"])
    batch_size = int(config["evaluation"]["batch_size"])
    family = config["models"][arch]["family"]
    base_dir = results / "models" / arch / "base"
    adapter_dir = results / "finetune" / arch / recipe / "standard" / "seed0" / "adapter"
    quantization = dict(config["training"]["quantization"])
    model = load_for_prediction(base_dir, family, adapter_dir, quantization, torch.device("cpu"), torch.float32)
    standard = standard_model(base_dir, family, adapter_dir, quantization)
    tokenizer = load_tokenizer(base_dir)
    testsets = config["evaluation"]["testsets"] or sorted(config["corpora"])
    texts = [visible_text(t, tokenizer, prompt, max_length)
             for t in load_messages(results, testsets, per_testset)]
    prompts = [prompt.render(t) for t in texts]
    new_tokens = max(len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in prompt.label_words)

    def ours(batch_texts):
        return (predict_log_odds(model, tokenizer, batch_texts, prompt, max_length, batch_size, progress=False)
                >= 0).astype(int)

    @torch.no_grad()
    def generate(batch_prompts):
        labels = []
        for start in range(0, len(batch_prompts), batch_size):
            enc = tokenizer(batch_prompts[start : start + batch_size], return_tensors="pt", padding=True)
            out = standard.generate(**enc, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            replies = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            labels += [parse_label(r, prompt.label_words) for r in replies]
        return np.array(labels)

    pipe = transformers.pipeline("text-generation", model=standard, tokenizer=tokenizer, device=torch.device("cpu"))

    def pipeline(batch_prompts):
        outputs = pipe(batch_prompts, max_new_tokens=new_tokens, do_sample=False, return_full_text=False,
                       pad_token_id=tokenizer.pad_token_id)
        return np.array([parse_label(o[0]["generated_text"], prompt.label_words) for o in outputs])

    paths = {"ours": (ours, texts), "generate": (generate, prompts), "pipeline": (pipeline, prompts)}
    load_before = common.loadavg()
    for fn, inputs in paths.values():  # warm-up
        fn(inputs[:batch_size])
    seconds = {name: [] for name in paths}
    labels = {}
    for _ in range(repeats):
        for name, (fn, inputs) in paths.items():
            started = time.perf_counter()
            labels[name] = fn(inputs)
            seconds[name].append(time.perf_counter() - started)
    n = len(texts)
    best = {name: min(values) for name, values in seconds.items()}
    rate = {name: n / best[name] for name in paths}
    record = {
        "name": f"predict_{arch}",
        "ours": round(rate["ours"], 1),
        "baseline": round(rate["generate"], 1),
        "unit": "messages/s",
        "ratio": round(rate["ours"] / rate["generate"], 2),
        "baseline_name": f"model.generate(max_new_tokens={new_tokens}) + parse, batch {batch_size}",
        "baseline_pipeline": round(rate["pipeline"], 1),
        "baseline_pipeline_name": f"pipeline('text-generation', max_new_tokens={new_tokens}) + parse, batch 1",
        "ratio_vs_pipeline": round(rate["ours"] / rate["pipeline"], 2),
        "identical_generate": bool(np.array_equal(labels["ours"], labels["generate"])),
        "identical_pipeline": bool(np.array_equal(labels["ours"], labels["pipeline"])),
        "disagreements_generate": int(np.sum(labels["ours"] != labels["generate"])),
        "disagreements_pipeline": int(np.sum(labels["ours"] != labels["pipeline"])),
        "unparsed_generate": int(np.sum(labels["generate"] < 0)),
        "unparsed_pipeline": int(np.sum(labels["pipeline"] < 0)),
        "malicious_share": round(float(np.mean(labels["ours"])), 3),
        "seconds": {name: [round(s, 3) for s in values] for name, values in seconds.items()},
        "n_messages": n,
        "mean_prompt_tokens": round(float(np.mean([len(ids) for ids in tokenizer(prompts)["input_ids"]])), 1),
        "batch_size": batch_size,
        "repeats": repeats,
        "testsets": testsets,
        "model": f"{arch} 4-bit NF4 + LoRA ({recipe}/standard/seed0)",
        "arch": arch,
        "loadavg_1min": [load_before, common.loadavg()],
    }
    return record


def profile(arch: str, results: Path, config: dict, per_testset: int | None, recipe: str = "generalist") -> str:
    """torch.profiler tables of ours and of generate over the same messages (for a missed goal)."""
    import io

    import torch

    from gendiag.attribution.explain import visible_text
    from gendiag.evaluate.predict import load_for_prediction, predict_log_odds
    from gendiag.models.loading import load_tokenizer

    common.setup_torch()
    prompt = common.prompt_format(config)
    max_length = int(config["prompt"]["max_length"])
    base_dir = results / "models" / arch / "base"
    adapter_dir = results / "finetune" / arch / recipe / "standard" / "seed0" / "adapter"
    model = load_for_prediction(base_dir, config["models"][arch]["family"], adapter_dir,
                                dict(config["training"]["quantization"]), torch.device("cpu"), torch.float32)
    standard = standard_model(base_dir, config["models"][arch]["family"], adapter_dir,
                              dict(config["training"]["quantization"]))
    tokenizer = load_tokenizer(base_dir)
    testsets = config["evaluation"]["testsets"] or sorted(config["corpora"])
    texts = [visible_text(t, tokenizer, prompt, max_length) for t in load_messages(results, testsets, per_testset)]
    prompts = [prompt.render(t) for t in texts]
    batch_size = int(config["evaluation"]["batch_size"])
    new_tokens = max(len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in prompt.label_words)

    def ours():
        predict_log_odds(model, tokenizer, texts, prompt, max_length, batch_size, progress=False)

    @torch.no_grad()
    def generate():
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            standard.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)

    out = io.StringIO()
    for name, fn in (("ours (predict_log_odds)", ours), (f"generate (max_new_tokens={new_tokens})", generate)):
        fn()  # warm-up
        started = time.perf_counter()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        seconds = time.perf_counter() - started
        out.write(f"## {name}: {len(texts)} messages, batch {batch_size}, {seconds:.2f} s under the profiler\n\n")
        out.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60))
        out.write("\n")
    return out.getvalue()
