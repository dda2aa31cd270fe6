"""The Snakemake graph: dry runs of each shipped config, a tiny end-to-end run, rerun semantics."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, SHARED_DATA, copy_workflow
from gendiag.evaluate.claims import format_finding

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run(args: list[str], cwd: Path, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def jobs_by_rule(dry_run_output: str) -> dict[str, list[str]]:
    """{rule: [wildcards of each job]} from `snakemake -n` output."""
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if match:
            wildcards = re.search(r"wildcards: (.*)", block)
            jobs.setdefault(match.group(1), []).append(wildcards.group(1) if wildcards else "")
    return jobs


@pytest.mark.parametrize(
    "configfile", ["config/config.yaml", "tests/config/tiny.yaml", "config/real-tiny.yaml", "config/real-small.yaml",
                   "config/paper.yaml"]
)
def test_dry_run_of_each_shipped_config(configfile):
    if configfile.startswith("config/real-") and not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} (the public corpora {configfile} reads) is absent")
    result = run(["-n", "--forceall", "--cores", "2", "--configfile", configfile], REPO, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = jobs_by_rule(result.stdout)
    bases = {"config/paper.yaml": {"base_hub"}, "config/real-small.yaml": {"base_gguf", "base_tiny"}}
    assert {"ingest", "normalise", "split", "finetune", "predict", "cross_dataset_table",
            *bases.get(configfile, {"base_tiny"})} <= set(jobs)
    # The classical baseline, once per recipe, in every study.
    recipes = yaml.safe_load((REPO / configfile).read_text())["recipes"]
    assert sorted(jobs["tfidf_baseline"]) == sorted(f"recipe={r}" for r in recipes)
    assert jobs["figure_roc_curves"] == [""]  # ROC and DET curves of every model, one job
    if configfile == "config/real-small.yaml":  # every stage, for the pretrained models too
        assert {"shap_tables", "circuits_tables", "claims_table", "study_summary"} <= set(jobs)
        assert sorted(jobs["base_gguf"]) == ["arch=gemma3", "arch=smollm2"]
    if configfile == "config/paper.yaml":
        assert len(jobs["download"]) == 11  # six Enron-Spam and five SpamAssassin archives


def with_evaluation_only_corpus(study: Path, tmp_path: Path) -> Path:
    """The tiny config plus `advance_fee`, a synthetic corpus marked evaluation-only (its path)."""
    config = yaml.safe_load((study / "tests/config/tiny.yaml").read_text())
    config["corpora"]["advance_fee"] = {"loader": "synthetic", "style": "advance_fee", "n_messages": 80, "seed": 4,
                                        "evaluation_only": True}
    path = tmp_path / "evaluation_only.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # sorted keys reorder runs: a rerun by itself
    return path


def job_blocks(dry_run_output: str, rule: str) -> list[str]:
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output)
    return [b for b in blocks if re.match(rf"(?:local)?rule {rule}:", b)]


def test_an_evaluation_only_corpus_is_a_test_set_that_nothing_trains_on(tmp_path):
    """The whole graph with an evaluation-only corpus: scored by every model and the baseline, in jobs of
    its own, with no validation split; no recipe, tokenizer or pretraining reads it."""
    path = with_evaluation_only_corpus(REPO, tmp_path)
    result = run(["-n", "--forceall", "--cores", "2", "--configfile", str(path)], REPO, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = jobs_by_rule(result.stdout)
    predict = sorted(jobs["predict"])
    assert sorted(jobs["predict_evaluation_only"]) == sorted(f"{w}, testset=advance_fee" for w in predict)
    assert sorted(jobs["tfidf_predict"]) == ["recipe=generalist, testset=advance_fee",
                                             "recipe=specialist, testset=advance_fee"]
    assert sorted(jobs["testset"]) == ["testset=advance_fee", "testset=corporate", "testset=credential_phish"]
    assert sorted(jobs["valset"]) == ["testset=corporate", "testset=credential_phish"]  # it has no validation split
    untouched = ("base_tiny", "compose_recipe", "finetune", "predict", "predict_variants", "tfidf_baseline",
                 "shap_token_sources", "rationales")
    for rule in untouched:
        for block in job_blocks(result.stdout, rule):
            assert "advance_fee" not in block, f"{rule} reads the evaluation-only corpus:\n{block}"
    # The aggregates read its predictions (and no validation predictions of it).
    cross = job_blocks(result.stdout, "cross_dataset_table")[0]
    assert "results/predictions/classical/specialist/tfidf/seed0/advance_fee.parquet" in cross
    assert "val_predictions/llama/specialist/standard/seed0/advance_fee" not in cross


def test_a_leave_one_out_family_trains_one_recipe_per_held_out_corpus_and_never_an_evaluation_only_one(tmp_path):
    """`recipes.loco: {leave_one_out: true}` over three corpora (and an evaluation-only fourth): one recipe
    per held-out corpus, composed from the other two, fine-tuned, baselined and scored like any recipe."""
    config = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
    config["corpora"]["mailing_list"] = {"loader": "synthetic", "style": "mailing_list", "n_messages": 80, "seed": 2}
    config["corpora"]["advance_fee"] = {"loader": "synthetic", "style": "advance_fee", "n_messages": 80, "seed": 4,
                                        "evaluation_only": True}
    config["recipes"]["loco"] = {"leave_one_out": True, "train_size": 80, "val_size": 20}
    path = tmp_path / "loco.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run(["-n", "--forceall", "--cores", "2", "--configfile", str(path)], REPO, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = jobs_by_rule(result.stdout)
    training = ["corporate", "credential_phish", "mailing_list"]
    loco = [f"loco_{c}" for c in training]
    assert sorted(jobs["compose_recipe"]) == sorted(f"recipe={r}" for r in ["generalist", "specialist", *loco])
    for held_out in training:
        block = next(b for b in job_blocks(result.stdout, "compose_recipe") if f"recipe=loco_{held_out}" in b)
        inputs = re.search(r"input: (.*)", block).group(1)
        assert [c for c in training if f"results/splits/{c}.parquet" in inputs] == [c for c in training
                                                                                    if c != held_out]
        assert "advance_fee" not in block
    # standard is the only paradigm scoped to every recipe in the tiny study
    assert sorted(j for j in jobs["finetune"] if "loco_" in j) == sorted(
        f"arch={a}, recipe={r}, paradigm=standard, seed=0" for a in ("llama", "mistral") for r in loco)
    assert sorted(j for j in jobs["tfidf_baseline"] if "loco_" in j) == sorted(f"recipe={r}" for r in loco)
    assert sorted(j for j in jobs["predict"] if "loco_" in j) == sorted(
        f"arch={a}, recipe={r}, paradigm=standard, seed=0" for a in ("llama", "mistral") for r in loco)
    cross = job_blocks(result.stdout, "cross_dataset_table")[0]
    for held_out in training:
        assert f"results/predictions/llama/loco_{held_out}/standard/seed0/{held_out}.parquet" in cross


MODEL_RULES = {"base_tiny", "finetune", "predict", "predict_variants", "shap_explain", "circuits_analyse",
               "model_audit", "predict_evaluation_only"}


def test_model_jobs_ask_for_the_configured_gpus_and_no_other_job_asks_for_one(tmp_path):
    """What the SLURM executor turns into --gpus/--mem/--time, read from the paper study's graph (with an
    evaluation-only corpus added, so that its prediction jobs are in the graph too)."""
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    config["corpora"]["heldout"] = {**config["corpora"]["spamassassin"], "evaluation_only": True}
    path = tmp_path / "paper-heldout.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run(["-n", "--forceall", "--cores", "2", "--configfile", str(path)], REPO, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    paper = config["compute"]
    seen = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout):
        match = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"resources: (.*)", block)
        if not match or not resources or match.group(1) == "all":
            continue
        rule = match.group(1)
        values = dict(item.split("=", 1) for item in resources.group(1).split(", "))
        if rule in MODEL_RULES:
            seen.add(rule)
            assert values.get("gpu") == str(paper["gpus"]), (rule, values)
            assert values["mem_mb"] == str(paper["mem_mb"]) and values["runtime"] == str(paper["runtime"])
        else:
            assert values.get("gpu", "0") == "0", f"CPU rule {rule} asks for a GPU: {values}"
            assert "mem_mb" in values and "runtime" in values, f"rule {rule} declares no mem_mb/runtime: {values}"
    assert seen == MODEL_RULES - {"base_tiny"}  # the paper study snapshots hub models instead


def test_invalid_config_stops_before_any_job(tmp_path):
    bad = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
    bad["training"]["steps"] = -5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = run(["-n", "--cores", "1", "--configfile", str(path)], REPO, timeout=300)
    assert result.returncode != 0
    assert "`training.steps`: -5 is less than the minimum of 1" in result.stderr + result.stdout


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    """A copy of the workflow that has run the tiny study to completion."""
    root = copy_workflow(tmp_path_factory.mktemp("study"))
    result = run(["--cores", "2", "--configfile", "tests/config/tiny.yaml"], root)
    assert result.returncode == 0, result.stderr[-5000:]
    return root


@pytest.mark.slow
def test_tiny_study_writes_the_canonical_outputs_with_sane_values(tiny_study):
    cross = pd.read_csv(tiny_study / "results/tables/cross_dataset.csv")
    expected = ["arch", "recipe", "paradigm", "seed", "testset", "in_domain", "n", "f1", "f1_ci_low", "f1_ci_high",
                "precision", "recall", "accuracy", "auroc"]
    assert list(cross.columns[: len(expected)]) == expected
    # (2 architectures x (zero-shot + 2 recipes) + llama's cot, fticl and head on the specialist
    #  + the classical baseline of each recipe) x 2 test sets
    assert len(cross) == (2 * 3 + 3 + 2) * 2
    assert set(cross["paradigm"]) == {"zeroshot", "standard", "cot", "fticl", "head", "tfidf"}
    assert sorted(cross.loc[cross["arch"] == "classical", "recipe"].unique()) == ["generalist", "specialist"]
    for metric in ("f1", "precision", "recall", "accuracy"):
        assert cross[metric].between(0, 1).all()
    assert (cross["f1_ci_low"] <= cross["f1"] + 1e-9).all() and (cross["f1"] <= cross["f1_ci_high"] + 1e-9).all()
    assert (cross["n"] == 30).all()
    # Operating point and calibration with CIs, and F1 at the threshold re-tuned on the target corpus's val split
    for metric in ("average_precision", "fpr_at_recall_90", "fpr_at_recall_95", "recall_at_fpr_1", "brier", "ece",
                   "f1_retuned"):
        assert cross[metric].between(0, 1).all(), metric
        assert (cross[f"{metric}_ci_low"] <= cross[f"{metric}_ci_high"]).all(), metric
    assert (cross["retuned_val_f1"] > 0).all()
    valset = pd.read_parquet(tiny_study / "results/valsets/corporate.parquet")
    testset = pd.read_parquet(tiny_study / "results/testsets/corporate.parquet")
    assert set(valset["split"]) == {"val"} and not set(valset["uid"]) & set(testset["uid"])
    val_predictions = pd.read_parquet(tiny_study / "results/val_predictions/llama/specialist/standard/seed0/"
                                                   "corporate.parquet")
    assert sorted(val_predictions["uid"]) == sorted(valset["uid"])
    in_domain = cross.set_index(["arch", "recipe", "paradigm", "testset"])["in_domain"]
    assert in_domain[("llama", "specialist", "standard", "corporate")]
    assert not in_domain[("llama", "specialist", "cot", "credential_phish")]
    assert in_domain[("mistral", "generalist", "standard", "credential_phish")]
    assert not cross.loc[cross["paradigm"] == "zeroshot", "in_domain"].any()
    for stem in ("cross_dataset", "generalisation_gap", "seed_summary", "claims"):
        for ext in ("csv", "md", "tex"):
            assert (tiny_study / f"results/tables/{stem}.{ext}").stat().st_size > 100
    audit = pd.read_csv(tiny_study / "results/tables/data_audit.csv").set_index("corpus")
    assert sorted(audit.index) == ["corporate", "credential_phish"]
    assert (audit["rows_read"] == audit["rows_kept"] + audit["rows_quarantined"]).all()
    assert (audit["rows_read"] == 160).all() and audit["est_label_noise"].between(0, 0.5).all()
    # The same-model audit: every standard model on its own 80 training messages, against the injected noise.
    model_audit = pd.read_csv(tiny_study / "results/tables/model_audit.csv")
    assert sorted(zip(model_audit["arch"], model_audit["recipe"], strict=True)) == [
        (a, r) for a in ("llama", "mistral") for r in ("generalist", "specialist")]
    assert (model_audit["n_audited"] == 80).all()
    assert (model_audit["noise_ground_truth"] == "injected (synthetic)").all()
    assert (model_audit["n_injected"] > 0).all() and (model_audit["both_flagged"] <= model_audit["model_flagged"]).all()
    assert model_audit["cleanlab_precision"].between(0, 1).all()
    for stem in ("cross_dataset_f1", "training_curves", "generalisation_gap", "data_audit", "source_identifiability",
                 "roc_curves", "det_curves"):
        for ext in ("pdf", "png"):
            assert (tiny_study / f"results/figures/{stem}.{ext}").stat().st_size > 5000
    log = pd.read_csv(tiny_study / "results/finetune/llama/generalist/standard/seed0/train_log.csv")
    assert len(log) == 30 and log["loss"].notna().all()
    assert (tiny_study / "results/finetune/llama/generalist/standard/seed0/adapter/adapter_model.safetensors").exists()
    assert not list((tiny_study / "results").rglob("*.tmp")), "a temporary file was left behind"


@pytest.mark.slow
def test_tiny_study_answers_every_claim_and_writes_the_summary_from_the_numbers(tiny_study):
    claims = pd.read_csv(tiny_study / "results/tables/claims.csv")
    for column in ("claim", "arch", "effect", "ci_low", "ci_high", "p_value", "p_adjusted", "verdict"):
        assert column in claims.columns
    # per arch: generalist vs specialist out of / in domain, standard vs zero-shot per recipe (2);
    # llama vs mistral per recipe and for zero-shot (3); cot, fticl and head vs standard for llama (3);
    # the baseline's generalist vs specialist (2); every fine-tuned LLM vs the baseline of its recipe: out of and in
    # domain for the specialist, on all test sets for the generalist (llama 4 paradigms: 2 + 1 + 3 x 2; mistral 3)
    assert len(claims) == 2 * 2 + 2 * 2 + 3 + 3 + 2 + 9 + 3
    for paradigm in ("cot", "fticl", "head"):
        assert f"{paradigm} > standard out of domain (specialist)" in set(claims["claim"])
        assert f"LLM ({paradigm}) > classical baseline out of domain (specialist)" in set(claims["claim"])
    assert set(claims["family"]) == {"recipe", "paradigm", "architecture", "baseline"}
    assert (claims["p_adjusted"] >= claims["p_value"] - 1e-12).all()
    assert (claims["ci_low"] <= claims["effect"] + 1e-9).all() and (claims["effect"] <= claims["ci_high"] + 1e-9).all()
    assert set(claims["verdict"]) <= {"supported", "reversed", "not significant"}
    summary = (tiny_study / "results/report/summary.md").read_text()
    for row in claims.to_dict("records"):
        assert format_finding(row) in summary
    assert "## Circuits" in summary and "## Explanations (SHAP)" in summary
    assert "## Label audits" in summary and "injected label flips, same-model precision" in summary


@pytest.mark.slow
def test_tiny_study_explains_every_fine_tuned_model_and_checks_the_explanations(tiny_study):
    faithfulness = pd.read_csv(tiny_study / "results/tables/shap_faithfulness.csv")
    for column in ("arch", "recipe", "paradigm", "testset", "comprehensiveness", "sufficiency",
                   "random_comprehensiveness", "random_sufficiency", "cue_precision_at_k", "cue_recall_at_k"):
        assert column in faithfulness.columns
    per_testset = faithfulness[faithfulness["testset"] != "all"]
    assert sorted(zip(per_testset["arch"], per_testset["recipe"], strict=True)) == [
        ("llama", "generalist"), ("llama", "specialist"), ("mistral", "generalist"), ("mistral", "specialist")]
    assert (per_testset["testset"] == "credential_phish").all() and (per_testset["paradigm"] == "standard").all()
    assert (faithfulness["additivity_max_error"] < 1e-6).all()
    assert (faithfulness["merged_max_log_odds_diff"] < 1e-3).all()
    messages = pd.read_parquet(tiny_study / "results/shap/llama/generalist/standard/seed0/credential_phish"
                                            ".messages.parquet")
    tokens = pd.read_parquet(tiny_study / "results/shap/llama/generalist/standard/seed0/credential_phish"
                                          ".tokens.parquet")
    assert 1 <= len(messages) <= 4 and set(messages["category"]) <= {"tp", "fp", "fn", "tn"}
    for uid, text in zip(messages["uid"], messages["text"], strict=True):
        own = tokens[tokens["uid"] == uid]
        assert "".join(own["token"]) == text
        assert all(text[s:e] == t for t, s, e in zip(own["token"], own["start"], own["end"], strict=True))
    top = pd.read_csv(tiny_study / "results/tables/shap_top_tokens.csv")
    assert {"llama", "mistral"} == set(top["arch"]) and {"abs", "signed"} == set(top["ranking"])
    for stem in ("shap_top_tokens", "shap_faithfulness", "shap_text_heatmaps_llama", "shap_text_heatmaps_mistral"):
        for ext in ("pdf", "png"):
            assert (tiny_study / f"results/figures/{stem}.{ext}").stat().st_size > 5000
    assert "<span" in (tiny_study / "results/report/shap_text_heatmaps_llama.html").read_text()


@pytest.mark.slow
def test_tiny_study_opens_up_every_fine_tuned_model(tiny_study):
    summary = pd.read_csv(tiny_study / "results/tables/circuits_summary.csv")
    for column in ("arch", "recipe", "paradigm", "n_pairs", "decision_layer", "top_heads",
                   "attr_vs_act_patching_corr", "cue_position_share", "merge_label_agreement"):
        assert column in summary.columns
    assert sorted(zip(summary["arch"], summary["recipe"], strict=True)) == [
        ("llama", "generalist"), ("llama", "specialist"), ("mistral", "generalist"), ("mistral", "specialist")]
    # The micro models barely react to one cue: a model no edit moves is reported, not analysed.
    analysed = summary[summary["n_pairs"] > 0]
    assert len(analysed) >= 1 and (summary["n_pairs"] <= 2).all()
    unmoved = summary[summary["n_pairs"] == 0]
    assert (unmoved["n_dropped_small_effect"] == unmoved["n_candidates"]).all()
    assert (summary["merge_label_agreement"] >= 0.99).all()
    assert analysed["cue_position_share"].between(0, 1).all()
    assert analysed["top_heads"].str.match(r"L\d+H\d+ ").all()
    pairs = pd.read_csv(tiny_study / "results/tables/circuits_pairs.csv")
    assert {"testset", "reason", "n"} <= set(pairs.columns) and (pairs["testset"] == "credential_phish").all()
    first = analysed.iloc[0]
    run_dir = tiny_study / f"results/circuits/{first['arch']}/{first['recipe']}/standard/seed0"
    lens, dla = pd.read_parquet(run_dir / "lens.parquet"), pd.read_parquet(run_dir / "dla.parquet")
    final = lens[lens["point"] == lens["point"].max()].set_index("pair_id")["clean"]
    assert dla.groupby("pair_id")["clean"].sum().reindex(final.index).to_numpy() == pytest.approx(
        final.to_numpy(), abs=1e-3)  # direct logit attribution adds up to the lens's last point
    figures = ["logit_lens", "logit_lens_dla", "patching_resid", "patching_heads", "patching_attribution",
               "attention_pairs_llama", "attention_pairs_mistral"]
    for stem in figures:
        for ext in ("pdf", "png"):
            assert (tiny_study / f"results/figures/{stem}.{ext}").stat().st_size > 5000


@pytest.mark.slow
def test_tiny_study_trains_every_paradigm_and_measures_prompt_robustness(tiny_study):
    run_dir = tiny_study / "results/finetune/llama/specialist"
    demos = yaml.safe_load((run_dir / "fticl/seed0/adapter/gendiag_demonstrations.json").read_text())
    assert [d["label"] for d in demos["demonstrations"]] == [1, 0]
    head = (run_dir / "head/seed0/adapter/adapter_model.safetensors").read_bytes()
    assert b"score" in head  # the classification head is saved with the adapter
    rationales = pd.read_parquet(tiny_study / "results/rationales/specialist.parquet")
    assert rationales["rationale"].str.startswith(" Reasoning:").all()
    cot = pd.read_parquet(tiny_study / "results/predictions/llama/specialist/cot/seed0/corporate.parquet")
    assert {"parsed", "generated"} <= set(cot.columns) and len(cot) == 30
    wrong = cot[~cot["parsed"]]
    assert (wrong["pred"] != wrong["label"]).all()  # an unreadable output is an error, never a class

    robustness = pd.read_csv(tiny_study / "results/tables/prompt_robustness.csv")
    # 6 zero-shot and standard models x 2 variants x (2 test sets + all test sets)
    assert len(robustness) == 6 * 2 * 3
    assert set(robustness["variant"]) == {"template2", "kshot2"}
    assert (robustness["delta_f1"] - (robustness["f1_variant"] - robustness["f1_main"])).abs().max() < 1e-9
    assert set(robustness["paradigm"]) == {"zeroshot", "standard"}
    for ext in ("pdf", "png"):
        assert (tiny_study / f"results/figures/prompt_robustness.{ext}").stat().st_size > 5000


@pytest.mark.slow
def test_rerun_after_a_complete_run_has_nothing_to_do(tiny_study):
    result = run(["-n", "--cores", "2", "--configfile", "tests/config/tiny.yaml"], tiny_study, timeout=300)
    assert result.returncode == 0, result.stderr
    assert jobs_by_rule(result.stdout) == {}, result.stdout
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_changing_one_architectures_lora_rank_reruns_only_that_architecture(tiny_study, tmp_path):
    config = yaml.safe_load((tiny_study / "tests/config/tiny.yaml").read_text())
    config["models"]["mistral"]["lora"]["r"] = 8
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))  # sorted keys: reordering must not rerun anything
    result = run(["-n", "--cores", "2", "--configfile", str(changed)], tiny_study, timeout=300)
    assert result.returncode == 0, result.stderr
    jobs = jobs_by_rule(result.stdout)
    assert sorted(jobs["finetune"]) == sorted(
        f"arch=mistral, recipe={r}, paradigm=standard, seed=0" for r in ("generalist", "specialist")
    )
    assert sorted(jobs["predict"]) == sorted(jobs["finetune"])
    assert sorted(jobs["predict_variants"]) == sorted(jobs["finetune"])
    assert sorted(jobs["shap_explain"]) == sorted(f"{w}, testset=credential_phish" for w in jobs["finetune"])
    assert sorted(jobs["circuits_analyse"]) == sorted(jobs["finetune"])
    aggregates = {"cross_dataset_table", "generalisation_gap_table", "figure_cross_dataset_f1",
                  "figure_training_curves", "figure_generalisation_gap", "shap_tables", "figure_shap_top_tokens",
                  "figure_shap_faithfulness", "figure_shap_heatmaps", "circuits_tables", "figure_circuits",
                  "figure_attention_pairs", "claims_table", "study_summary", "seed_summary_table", "weight_drift",
                  "prompt_robustness", "figure_roc_curves", "model_audit_table", "all"}
    assert sorted(jobs["model_audit"]) == sorted(w.replace("paradigm=standard, ", "") for w in jobs["finetune"])
    assert set(jobs) == {"finetune", "predict", "predict_variants", "shap_explain", "circuits_analyse",
                         "model_audit"} | aggregates
    assert jobs["figure_shap_heatmaps"] == ["arch=mistral"]
    assert jobs["figure_attention_pairs"] == ["arch=mistral"]


@pytest.mark.slow
def test_adding_an_evaluation_only_corpus_schedules_exactly_its_predictions_and_the_aggregates(tiny_study, tmp_path):
    path = with_evaluation_only_corpus(tiny_study, tmp_path)
    result = run(["-n", "--cores", "2", "--configfile", str(path)], tiny_study, timeout=300)
    assert result.returncode == 0, result.stderr
    jobs = jobs_by_rule(result.stdout)
    # Its own data jobs, once
    for rule in ("ingest", "normalise", "split", "audit_corpus"):
        assert jobs[rule] == ["corpus=advance_fee"], rule
    assert jobs["testset"] == ["testset=advance_fee"]
    # its predictions: every model (9) and the baseline of each recipe, nothing else re-predicted or retrained
    assert len(jobs["predict_evaluation_only"]) == 2 * 3 + 3
    assert all(w.endswith("testset=advance_fee") for w in jobs["predict_evaluation_only"])
    assert sorted(jobs["tfidf_predict"]) == [f"recipe={r}, testset=advance_fee" for r in ("generalist", "specialist")]
    # and the aggregates (the audit across corpora looks for leakage into it; SHAP's source-artefact scores read
    # that audit's identifiability probe). Checked on the default study too: the same set, 12 model jobs.
    aggregates = {"audit_across", "data_audit_table", "figure_data_audit", "figure_source_identifiability",
                  "shap_token_sources", "shap_tables", "figure_shap_top_tokens", "cross_dataset_table",
                  "generalisation_gap_table", "seed_summary_table", "claims_table", "study_summary",
                  "figure_cross_dataset_f1", "figure_generalisation_gap", "figure_roc_curves", "all"}
    assert set(jobs) == {"ingest", "normalise", "split", "audit_corpus", "testset", "predict_evaluation_only",
                         "tfidf_predict"} | aggregates, sorted(jobs)


def dry_run_with_cot(study: Path, tmp_path: Path, **cot) -> tuple[Path, dict[str, list[str]]]:
    """The tiny config with `training.cot` keys changed (its path), and the dry run's jobs in `study`."""
    config = yaml.safe_load((study / "tests/config/tiny.yaml").read_text())
    config["training"]["cot"].update(cot)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run(["-n", "--cores", "2", "--configfile", str(path)], study, timeout=300)
    assert result.returncode == 0, result.stderr
    return path, jobs_by_rule(result.stdout)


@pytest.mark.slow
def test_changing_the_cot_settings_reruns_only_the_cot_model(tiny_study, tmp_path):
    _, jobs = dry_run_with_cot(tiny_study, tmp_path, max_cues=2)
    assert jobs["rationales"] == ["recipe=specialist"]
    assert jobs["finetune"] == jobs["predict"] == ["arch=llama, recipe=specialist, paradigm=cot, seed=0"]
    assert "predict_variants" not in jobs and "shap_explain" not in jobs and "circuits_analyse" not in jobs


@pytest.mark.slow
def test_a_teacher_writes_the_rationales_once_and_only_the_cot_model_retrains(tiny_study, tmp_path):
    path, jobs = dry_run_with_cot(tiny_study, tmp_path, rationales="teacher",
                                  teacher={"model": "llama", "max_new_tokens": 16})
    assert jobs["rationales"] == ["recipe=specialist"]
    assert jobs["finetune"] == jobs["predict"] == ["arch=llama, recipe=specialist, paradigm=cot, seed=0"]
    assert "base_tiny" not in jobs and "shap_explain" not in jobs

    # The teacher job itself, in a copy holding only its inputs: the study's Llama base writes.
    copy = copy_workflow(tmp_path / "copy")
    for item in ("results/datasets/specialist", "results/models/llama/base"):
        shutil.copytree(tiny_study / item, copy / item)
    target = ["results/rationales/specialist.parquet", "--allowed-rules", "rationales"]
    result = run([*target, "--cores", "2", "--configfile", str(path)], copy, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_parquet(copy / "results/rationales/specialist.parquet")
    messages = pd.concat([pd.read_parquet(copy / f"results/datasets/specialist/{s}.parquet") for s in ("train", "val")])
    assert table["uid"].tolist() == messages["uid"].tolist()
    assert table["rationale"].str.startswith(" Reasoning:").all()
    assert not table["rationale"].str.contains(r"\b(?:phishing|legitimate)\b", case=False).any()
    # this briefly pretrained base may write only blank lines: such rows fall back to cue rationales, and say so
    assert set(table["origin"]) <= {"teacher", "cues (the teacher wrote no usable rationale)"}
    log = (copy / "results/logs/rationales/specialist.log").read_text()
    assert "writes rationales for 100 messages" in log and "origin of the rationales" in log
    # cached: asking again runs nothing
    again = run(["-n", *target, "--cores", "2", "--configfile", str(path)], copy, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_the_quick_training_and_shap_benchmarks_run_against_their_baselines_on_the_tiny_study(tiny_study, tmp_path):
    """The benchmark scripts call the library like the workflow does; a library change must not break them.
    (predict and patching need trained models: the tiny study's are near chance, so generate's parse
    and the minimal pairs say nothing there.)"""
    out = tmp_path / "bench.jsonl"
    command = [sys.executable, "benchmarks/run.py", "--quick", "--no-profile", "--only", "train", "shap",
               "--output", str(out), "--results", str(tiny_study / "results"),
               "--config", str(tiny_study / "tests/config/tiny.yaml")]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = {r["name"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == {"train_llama", "shap_llama"}
    train, shap = records["train_llama"], records["shap_llama"]
    assert train["unit"] == "real tokens/s"
    assert train["ratio"] == pytest.approx(train["ours"] / train["baseline"], rel=0.02)
    assert shap["unit"] == "s/message" and shap["ratio"] == pytest.approx(shap["baseline"] / shap["ours"], rel=0.02)
    assert shap["correlation"] > 0.999
    assert "train_llama" in result.stdout and "shap_llama" in result.stdout  # the table


def jobs_after_editing(study: Path, module: str) -> dict[str, list[str]]:
    """The dry run's jobs after a content edit of `module` (restored afterwards, mtime included)."""
    code = study / module
    original, before = code.read_bytes(), code.stat()
    try:  # Snakemake compares checksums of small inputs, so only a change of content counts
        code.write_bytes(original + b"\n# an edit\n")
        result = run(["-n", "--cores", "2", "--configfile", "tests/config/tiny.yaml"], study, timeout=300)
    finally:
        code.write_bytes(original)
        os.utime(code, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert result.returncode == 0, result.stderr
    return jobs_by_rule(result.stdout)


@pytest.mark.slow
def test_editing_the_faithfulness_code_reruns_shap_and_nothing_upstream(tiny_study):
    jobs = jobs_after_editing(tiny_study, "src/gendiag/attribution/faithfulness.py")
    assert len(jobs["shap_explain"]) == 4
    # the summary quotes the SHAP table, so it is rewritten too
    assert set(jobs) == {"shap_explain", "shap_tables", "figure_shap_top_tokens", "figure_shap_faithfulness",
                         "figure_shap_heatmaps", "study_summary", "all"}


@pytest.mark.slow
def test_editing_the_patching_code_reruns_the_circuits_and_nothing_upstream(tiny_study):
    jobs = jobs_after_editing(tiny_study, "src/gendiag/circuits/patching.py")
    assert len(jobs["circuits_analyse"]) == 4
    assert set(jobs) == {"circuits_analyse", "circuits_tables", "figure_circuits", "figure_attention_pairs",
                         "study_summary", "all"}


@pytest.mark.slow
def test_hub_model_entry_runs_from_a_local_model_directory(tiny_study, micro_bases, tmp_path):
    """`source: hub` with `id` pointing at a saved model: snapshot rule, then zero-shot predictions."""
    config = yaml.safe_load((tiny_study / "tests/config/tiny.yaml").read_text())
    config["models"] = {"hubllama": {"family": "llama", "source": "hub", "id": str(micro_bases["llama"])}}
    config["training"]["paradigms"] = ["zeroshot"]
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run(["--cores", "2", "--configfile", str(path)], tiny_study, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    base = tiny_study / "results/models/hubllama/base"
    assert (base / "model.safetensors").exists() and (base / "tokenizer.json").exists()
    predictions = pd.read_parquet(tiny_study / "results/predictions/hubllama/none/zeroshot/seed0/corporate.parquet")
    assert len(predictions) == 30 and predictions["p_malicious"].between(0, 1).all()


def test_corpus_given_by_url_is_downloaded_checked_and_read(tiny_study, tmp_path):
    """The download rule fetches a URL corpus once, and a wrong sha256 stops it before ingest."""
    csv = tmp_path / "phishing_sample.csv"
    pd.DataFrame(
        {"Email Text": ["Please verify your account at http://bank.example/login", "Lunch on Friday?"] * 10,
         "Email Type": ["Phishing Email", "Safe Email"] * 10}
    ).to_csv(csv)
    config = yaml.safe_load((tiny_study / "tests/config/tiny.yaml").read_text())
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    config["corpora"]["kaggle"] = {"loader": "kaggle_phishing", "url": csv.as_uri(), "sha256": digest}
    good = tmp_path / "url.yaml"
    good.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run(["results/corpora/kaggle.parquet", "--cores", "1", "--configfile", str(good)], tiny_study)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tiny_study / "resources/downloads/phishing_sample.csv").read_bytes() == csv.read_bytes()
    corpus = pd.read_parquet(tiny_study / "results/corpora/kaggle.parquet")
    assert len(corpus) == 20 and corpus["uid"].iloc[0].startswith("kaggle:kaggle_phishing:row ")

    config["corpora"]["kaggle"].update(sha256="f" * 64, filename="tampered.csv")
    bad = tmp_path / "bad_sha.yaml"
    bad.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run(["results/corpora/kaggle.parquet", "--cores", "1", "--configfile", str(bad)], tiny_study)
    assert result.returncode != 0
    log = (tiny_study / "results/logs/download/tampered.csv.log").read_text()
    assert f"does not match the config's {'f' * 64}" in log
    assert not (tiny_study / "resources/downloads/tampered.csv").exists()


@pytest.mark.slow
def test_real_corpus_slice_runs_every_stage_and_says_where_there_is_no_ground_truth(tmp_path):
    """The four real corpora (a few hundred messages each) through ingest, audit, QLoRA, evaluation,
    SHAP, circuits, claims and the summary: real mail has no planted cues, which every SHAP and
    circuits output must show as "no ground truth", never as a crash or a zero."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} (the public corpora) is absent")
    from conftest import write_real_slice_config

    root = copy_workflow(tmp_path)
    config = write_real_slice_config(root)
    result = run(["--cores", "2", "--configfile", str(config)], root, timeout=2400)
    assert result.returncode == 0, result.stderr[-6000:]
    tables = root / "results/tables"
    faithfulness = pd.read_csv(tables / "shap_faithfulness.csv")
    assert set(faithfulness["arch"]) == {"llama", "gemma2"} and (faithfulness["n_planted_cue_messages"] == 0).all()
    assert faithfulness["cue_precision_at_k"].isna().all() and faithfulness["comprehensiveness"].notna().all()
    assert "n/a (no planted cues)" in (tables / "shap_faithfulness.md").read_text()
    assert "n/a (no planted cues)" in (tables / "shap_top_tokens.md").read_text()
    top = pd.read_csv(tables / "shap_top_tokens.csv")
    assert len(top) and top["in_cue_share"].isna().all()
    circuits = pd.read_csv(tables / "circuits_summary.csv")
    assert len(circuits) == 4  # 2 architectures x 2 recipes
    analysed = circuits[circuits["n_pairs"] > 0]
    assert len(analysed) and analysed["pair_kinds"].str.contains("edit_").all()
    summary = (root / "results/report/summary.md").read_text()
    assert "n/a (no planted cues)" in summary
    assert (root / "results/report/shap_text_heatmaps_llama.html").read_text().count("no ground truth") >= 1
    cross = pd.read_csv(tables / "cross_dataset.csv")
    assert set(cross["testset"]) == {"enron", "spamassassin", "nazario", "clair"}
    # CLAIR is evaluation-only: every model scores it, none trained on it, and it has no validation split.
    clair = cross[cross["testset"] == "clair"]
    assert len(clair) == len(cross) // 4 and not clair["in_domain"].any() and clair["f1_retuned"].isna().all()
    assert set(pd.read_parquet(root / "results/splits/clair.parquet")["split"]) == {"test"}
    assert (pd.read_csv(tables / "model_audit.csv")["noise_ground_truth"] == "none (real labels)").all()
