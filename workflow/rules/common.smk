import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from gendiag.config import (  # noqa: E402
    CLASSICAL_ARCH,
    CLASSICAL_PARADIGM,
    CLASSICAL_SEED,
    in_domain,
    validate_config,
)
from gendiag.data.corpus import corpus_sources, download_name  # noqa: E402

# Also expands each leave-one-out recipe family (`recipes.<name>.leave_one_out`) into its recipes.
validate_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")


CORPORA = list(config["corpora"])
RECIPES = list(config["recipes"])
MODELS = list(config["models"])
TESTSETS = config["evaluation"]["testsets"] or CORPORA
# Evaluation-only corpora: the whole corpus is a test set; no recipe, tokenizer or tiny-model
# pretraining sees it, it has no train or validation split, and each model scores it in a job of
# its own (predict_evaluation_only), so adding one reruns nothing but its predictions and the aggregates.
EVALUATION_ONLY = [c for c in CORPORA if config["corpora"][c].get("evaluation_only")]
SPLIT_CORPORA = [c for c in CORPORA if c not in EVALUATION_ONLY]
SPLIT_TESTSETS = [t for t in TESTSETS if t not in EVALUATION_ONLY]
EVALUATION_ONLY_TESTSETS = [t for t in TESTSETS if t in EVALUATION_ONLY]
SEEDS = config["training"]["seeds"]
TUNED_PARADIGMS = [p for p in config["training"]["paradigms"] if p != "zeroshot"]
TINY_MODELS = [m for m in MODELS if config["models"][m]["source"] == "tiny"]
HUB_MODELS = [m for m in MODELS if config["models"][m]["source"] == "hub"]
GGUF_MODELS = [m for m in MODELS if config["models"][m]["source"] == "gguf"]
# A warning, not an error: a config given with --configfile is merged into config/config.yaml,
# whose scope names the default models, so a study with other models inherits names it lacks.
for _paradigm, _scope in config["training"]["paradigm_scope"].items():
    for _key, _known in (("models", MODELS), ("recipes", RECIPES)):
        _unknown = sorted(set(_scope.get(_key) or []) - set(_known))
        if _unknown and _paradigm in config["training"]["paradigms"]:
            print(
                f"gendiag: config training.paradigm_scope.{_paradigm}.{_key} names unknown {_unknown} "
                f"(known {_key}: {_known}); {_paradigm} trains only the known ones. Set "
                f"training.paradigm_scope.{_paradigm} in your config to choose.",
                file=sys.stderr,
            )
ZEROSHOT_RECIPE = "none"
ZEROSHOT_SEED = 0
LIBRARY = Path(workflow.basedir) / "src/gendiag"


def corpus_spec(corpus):
    """A corpus's entry as the loaders read it: its sources, without the workflow's `evaluation_only`."""
    return {
        k: v for k, v in config["corpora"][corpus].items() if k != "evaluation_only"
    }


# Corpus files given by URL, by the name they are downloaded to (the download rule's wildcard).
DOWNLOADS = {
    download_name(source): source
    for corpus in CORPORA
    for source in corpus_sources(corpus_spec(corpus))
    if source.get("url")
}


def canonical(value):
    """A config subtree with sorted keys: Snakemake compares params by repr, so key order must not count."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


# Snakemake compares params by repr, so key order must not count: after the names above have
# been read in the user's order, every config subtree a rule takes as params gets sorted keys.
_canonical_config = canonical(config)
config.clear()
config.update(_canonical_config)


def one_of(names):
    """A wildcard regex matching exactly these names (or nothing when the list is empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    corpus=one_of(CORPORA),
    recipe=one_of(RECIPES + [ZEROSHOT_RECIPE]),
    arch=one_of(MODELS),
    testset=one_of(TESTSETS),
    paradigm=one_of(config["training"]["paradigms"]),
    seed=r"\d+",


def source_files(corpus):
    """Local file or folder of each source of a corpus (hub datasets have none), by source name."""
    files = {}
    for source in corpus_sources(corpus_spec(corpus)):
        if source.get("url"):
            files[source["name"]] = f"resources/downloads/{download_name(source)}"
        elif source.get("path"):
            files[source["name"]] = source["path"]
    return files


def module_file(module):
    """The source file of a gendiag module, e.g. "models.llama"."""
    return os.path.relpath(LIBRARY / f"{module.replace('.', '/')}.py")


def library(*modules):
    """Library source files a rule depends on, so editing them reruns it (and only it)."""
    return [module_file(m) for m in ("__init__", "io", *modules)]


def family_library(wildcards):
    """The per-architecture module of this job's model family."""
    return [module_file(f"models.{config['models'][wildcards.arch]['family']}")]


def base_params(wildcards):
    """What a tiny base is built from: not its LoRA or training settings, which come later."""
    model = config["models"][wildcards.arch]
    return {k: model[k] for k in ("family", "seed", "shape")}


def model_prompt(wildcards):
    """The prompt block as this job's model reads it: with the model's own chat-template setting."""
    return {
        **config["prompt"],
        "chat_template": config["models"][wildcards.arch]["chat_template"],
    }


PARADIGM_BLOCKS = (
    "fticl",
    "cot",
)  # settings blocks of `training` that belong to one paradigm


def training_params(wildcards):
    """The training settings of this job: global, this model's overrides, and its own paradigm's
    block only, so that changing another paradigm's settings reruns nothing here."""
    merged = {
        **config["training"],
        **config["models"][wildcards.arch].get("training", {}),
    }
    skip = {"seeds", "paradigms", "paradigm_scope", *PARADIGM_BLOCKS} - {
        wildcards.paradigm
    }
    return canonical({k: v for k, v in merged.items() if k not in skip})


def in_paradigm_scope(arch, recipe, paradigm):
    """Whether `training.paradigm_scope` lets this paradigm train this model on this recipe."""
    scope = config["training"]["paradigm_scope"].get(paradigm, {})
    return arch in (scope.get("models") or MODELS) and recipe in (
        scope.get("recipes") or RECIPES
    )


def runs():
    """Every evaluated model: (arch, recipe, paradigm, seed); zero-shot has no recipe or seed."""
    rows = []
    for arch in MODELS:
        if "zeroshot" in config["training"]["paradigms"]:
            rows.append((arch, ZEROSHOT_RECIPE, "zeroshot", ZEROSHOT_SEED))
        for recipe in RECIPES:
            for paradigm in TUNED_PARADIGMS:
                if not in_paradigm_scope(arch, recipe, paradigm):
                    continue
                for seed in SEEDS:
                    rows.append((arch, recipe, paradigm, seed))
    return rows


# Paradigms whose models read the classification prompt and are scored at its answer position:
# the ones SHAP, circuits and the prompt variants apply to (cot writes before it answers, head
# has no LM head, fticl reads demonstrations first).
PROMPT_SCORED = ("zeroshot", "standard")
# The variants are evaluated on the test sets of split corpora (k-shot demonstrations come from the
# test corpus's training split, which an evaluation-only corpus does not have).
KSHOT = config["evaluation"]["kshot"]
VARIANTS = (["template2"] if config["evaluation"]["alt_template"] else []) + (
    [f"kshot{KSHOT['k']}"] if KSHOT["k"] > 0 else []
)


def variant_runs():
    """Runs evaluated again with each prompt variant (second template, k-shot prompts)."""
    return [run for run in runs() if run[2] in PROMPT_SCORED] if VARIANTS else []


def variant_predictions():
    return [
        f"results/variants/{run_dir(*run)}/{variant}/{testset}.parquet"
        for run in variant_runs()
        for variant in VARIANTS
        for testset in SPLIT_TESTSETS
    ]


def rationales_input(wildcards):
    """The rationales a chain-of-thought run trains on; none for other paradigms."""
    if wildcards.paradigm != "cot":
        return []
    return f"results/rationales/{wildcards.recipe}.parquet"


COT = config["training"]["cot"]
TEACHER = (
    COT["teacher"]
    if COT["rationales"] == "teacher" and "cot" in config["training"]["paradigms"]
    else None
)


def teacher_base():
    """The teacher's model directory: a study model's base, or its own snapshot."""
    if TEACHER is None:
        return []
    if TEACHER["model"]:
        return f"results/models/{TEACHER['model']}/base"
    return "results/teacher/base"


def teacher_family():
    if TEACHER is None:
        return None
    if TEACHER["model"]:
        return config["models"][TEACHER["model"]]["family"]
    return TEACHER["family"]


def teacher_modules():
    """The library a teacher job runs on top of the rationale code."""
    if TEACHER is None:
        return ()
    family = f"models.{teacher_family()}"
    return ("finetune.teacher", "models.__init__", "models.loading", family)


def rationales_params():
    """What the rationales depend on: the source's own settings only."""
    keys = {
        "cues": ("max_cues",),
        "file": ("column",),
        "teacher": ("max_cues", "answer_cue", "teacher"),
    }
    return {
        "rationales": COT["rationales"],
        **{k: COT[k] for k in keys[COT["rationales"]]},
    }


CLASSICAL = config["classical"]


def classical_runs():
    """The classical baseline, one per recipe: (classical, recipe, tfidf, 0); none when it is off."""
    if not CLASSICAL["enabled"]:
        return []
    return [
        (CLASSICAL_ARCH, recipe, CLASSICAL_PARADIGM, CLASSICAL_SEED)
        for recipe in RECIPES
    ]


def classical_settings():
    """The baseline's hyper-parameters (`gendiag.evaluate.classical.TfidfSettings`)."""
    return {k: v for k, v in CLASSICAL.items() if k != "enabled"}


def evaluated_runs():
    """Every model the tables, figures and claims compare: the LLM runs and the classical baseline."""
    return runs() + classical_runs()


def tuned_runs():
    """The fine-tuned runs (every run but the zero-shot baseline)."""
    return [run for run in runs() if run[2] != "zeroshot"]


def model_audit_runs():
    """(arch, recipe, seed) of each standard fine-tuned model the same-model label audit scores."""
    if not config["audit"]["same_model"]["enabled"]:
        return []
    return [
        (arch, recipe, seed)
        for arch, recipe, paradigm, seed in tuned_runs()
        if paradigm == "standard"
    ]


def run_dir(arch, recipe, paradigm, seed):
    return f"{arch}/{recipe}/{paradigm}/seed{seed}"


def predictions_of(arch, recipe, paradigm, seed):
    return [
        f"results/predictions/{run_dir(arch, recipe, paradigm, seed)}/{t}.parquet"
        for t in TESTSETS
    ]


def all_predictions():
    return [p for run in evaluated_runs() for p in predictions_of(*run)]


def val_predictions_of(arch, recipe, paradigm, seed):
    """A run's predictions on the validation split of each test set's corpus (for the re-tuned threshold)."""
    return [
        f"results/val_predictions/{run_dir(arch, recipe, paradigm, seed)}/{t}.parquet"
        for t in SPLIT_TESTSETS
    ]


def all_val_predictions():
    return [p for run in evaluated_runs() for p in val_predictions_of(*run)]


VALSETS = expand("results/valsets/{testset}.parquet", testset=SPLIT_TESTSETS)


def split_fractions(wildcards):
    """An evaluation-only corpus is all test split (after de-duplication); the others split as configured."""
    if wildcards.corpus in EVALUATION_ONLY:
        return {"test": 1.0}
    return config["splits"]["fractions"]


def all_train_logs():
    return [
        f"results/finetune/{run_dir(*run)}/train_log.csv"
        for run in runs()
        if run[2] != "zeroshot"
    ]


def adapter_input(wildcards):
    """The adapter of a fine-tuned run; none for the zero-shot baseline."""
    if wildcards.paradigm == "zeroshot":
        return []
    return f"results/finetune/{wildcards.arch}/{wildcards.recipe}/{wildcards.paradigm}/seed{wildcards.seed}/adapter"


def in_domain_map():
    """{recipe: [test sets whose corpus the recipe trains on]}; a leave-one-out recipe's held-out corpus is not."""
    return in_domain(config["recipes"], TESTSETS)


def model_resources():
    """Resources of a model job; memory and runtime grow with each retry attempt."""
    compute = config["compute"]
    return {
        "mem_mb": lambda wildcards, attempt: compute["mem_mb"] * attempt,
        "runtime": lambda wildcards, attempt: compute["runtime"] * attempt,
        "gpu": compute["gpus"],
    }


def summary_extra_tables():
    """The SHAP and circuits tables the summary quotes, when the study produces them."""
    return {
        "shap": "results/tables/shap_faithfulness.csv" if shap_jobs() else [],
        "circuits": "results/tables/circuits_summary.csv" if circuits_runs() else [],
        "label_audit": "results/tables/model_audit.csv" if model_audit_runs() else [],
    }


def study_outputs():
    # Training curves and the recipe comparison exist only when something is fine-tuned.
    tuned = bool(TUNED_PARADIGMS)
    table_names = ["cross_dataset", "seed_summary"] + (
        ["generalisation_gap", "weight_drift"] if tuned else []
    )
    figure_names = ["cross_dataset_f1", "roc_curves", "det_curves"] + (
        ["training_curves", "generalisation_gap", "weight_drift"] if tuned else []
    )
    if len(evaluated_runs()) > 1:  # a claim compares two models
        table_names.append("claims")
    if variant_runs():
        table_names.append("prompt_robustness")
        figure_names.append("prompt_robustness")
    tables = expand(
        "results/tables/{name}.{ext}", name=table_names, ext=["csv", "md", "tex"]
    )
    figures = expand(
        "results/figures/{name}.{ext}", name=figure_names, ext=["pdf", "png"]
    )
    reports = expand("results/ingested/{corpus}.ingest.json", corpus=CORPORA)
    audit = expand("results/tables/data_audit.{ext}", ext=["csv", "md", "tex"])
    audit += expand("results/figures/data_audit.{ext}", ext=["pdf", "png"])
    if model_audit_runs():
        audit += expand("results/tables/model_audit.{ext}", ext=["csv", "md", "tex"])
    if len(CORPORA) > 1:  # telling corpora apart needs two of them
        audit += expand(
            "results/figures/source_identifiability.{ext}", ext=["pdf", "png"]
        )
    if shap_jobs():
        tables += expand(
            "results/tables/{name}.{ext}",
            name=["shap_top_tokens", "shap_comparison", "shap_faithfulness"],
            ext=["csv", "md", "tex"],
        )
        figures += expand(
            "results/figures/{name}.{ext}",
            name=["shap_top_tokens", "shap_faithfulness"]
            + [
                f"shap_text_heatmaps_{arch}"
                for arch in sorted({j[0] for j in shap_jobs()})
            ],
            ext=["pdf", "png"],
        )
        reports += [
            f"results/report/shap_text_heatmaps_{arch}.html"
            for arch in sorted({j[0] for j in shap_jobs()})
        ]
    if circuits_runs():
        tables += expand(
            "results/tables/{name}.{ext}",
            name=["circuits_summary", "circuits_pairs"],
            ext=["csv", "md", "tex"],
        )
        figures += expand(
            "results/figures/{name}.{ext}",
            name=[
                "logit_lens",
                "logit_lens_dla",
                "patching_resid",
                "patching_heads",
                "patching_attribution",
            ]
            + [
                f"attention_pairs_{arch}"
                for arch in sorted({run[0] for run in circuits_runs()})
            ],
            ext=["pdf", "png"],
        )
    if len(evaluated_runs()) > 1:
        reports.append("results/report/summary.md")
    return tables + figures + reports + audit


# What a shap_explain job depends on (the table settings are the shap_tables rule's).
SHAP_JOB_KEYS = (
    "sample",
    "max_evals",
    "batch_size",
    "forward_batch_size",
    "fractions",
    "random_repeats",
    "cue_k",
    "seed",
)
# SHAP and circuits default to the test sets of split corpora: an evaluation-only corpus is analysed
# when named in shap.testsets / circuits.testsets.
SHAP_TESTSETS = config["shap"]["testsets"] or SPLIT_TESTSETS


def shap_jobs():
    """Every explained (arch, recipe, paradigm, seed, testset): standard fine-tuned models only (PROMPT_SCORED).

    Sorted, because rules take the list as params: reordering the config must not rerun them.
    """
    return sorted(
        (arch, recipe, paradigm, seed, testset)
        for arch, recipe, paradigm, seed in runs()
        if paradigm == "standard"
        for testset in SHAP_TESTSETS
    )


def shap_output(job, kind):
    arch, recipe, paradigm, seed, testset = job
    return (
        f"results/shap/{run_dir(arch, recipe, paradigm, seed)}/{testset}.{kind}.parquet"
    )


CIRCUITS_TESTSETS = config["circuits"]["testsets"] or SPLIT_TESTSETS
CIRCUITS_TABLES = (
    "pairs",
    "drops",
    "agreement",
    "lens",
    "dla",
    "resid",
    "heads",
    "attention",
)


def circuits_runs():
    """Every fine-tuned model the circuit analysis opens up: (arch, recipe, paradigm, seed), sorted."""
    return sorted(run for run in runs() if run[2] == "standard")


def circuits_output(run, table):
    return f"results/circuits/{run_dir(*run)}/{table}.parquet"


# The per-model circuit tables each circuits figure reads.
CIRCUIT_FIGURE_TABLES = {
    "logit_lens": ("lens",),
    "logit_lens_dla": ("dla",),
    "patching_resid": ("resid",),
    "patching_heads": ("heads",),
    "patching_attribution": ("resid", "heads"),
}
