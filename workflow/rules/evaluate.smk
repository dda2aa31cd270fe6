PREDICT_MODULES = (
    "prompts",
    "models.__init__",
    "models.loading",
    "models.inputs",
    "finetune.rationales",
    "finetune.paradigms",
    "data.synthetic",
    "evaluate.predict",
    "evaluate.variants",
)


# One job per model writes every test set's predictions, and those on the validation split of each
# test set's corpus (for the re-tuned threshold): loading the model dominates the cost (an 8B model
# takes longer to load than to score a test set), so it is loaded once.
rule predict:
    input:
        base="results/models/{arch}/base",
        adapter=adapter_input,
        testsets=expand("results/testsets/{testset}.parquet", testset=SPLIT_TESTSETS),
        valsets=VALSETS,
        code=lambda wc: library(*PREDICT_MODULES) + family_library(wc),
    output:
        predictions=expand(
            "results/predictions/{{arch}}/{{recipe}}/{{paradigm}}/seed{{seed}}/{testset}.parquet",
            testset=SPLIT_TESTSETS,
        ),
        val_predictions=expand(
            "results/val_predictions/{{arch}}/{{recipe}}/{{paradigm}}/seed{{seed}}/{testset}.parquet",
            testset=SPLIT_TESTSETS,
        ),
    log:
        "results/logs/predict/{arch}/{recipe}/{paradigm}/seed{seed}.log",
    benchmark:
        "results/benchmarks/predict/{arch}/{recipe}/{paradigm}/seed{seed}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: config["compute"]["threads"]
    resources:
        **model_resources(),
    params:
        family=lambda wc: config["models"][wc.arch]["family"],
        prompt=model_prompt,
        quantization=config["training"]["quantization"],
        evaluation={k: config["evaluation"][k] for k in ("batch_size", "threshold")},
        compute={k: config["compute"][k] for k in ("device", "dtype")},
        cot=lambda wc: config["training"]["cot"] if wc.paradigm == "cot" else {},
    script:
        "../scripts/predict.py"


# An evaluation-only corpus's test set, scored by each model in a job of its own: adding one to a
# finished study reruns no other prediction.
use rule predict as predict_evaluation_only with:
    input:
        base="results/models/{arch}/base",
        adapter=adapter_input,
        testsets=["results/testsets/{testset}.parquet"],
        code=lambda wc: library(*PREDICT_MODULES) + family_library(wc),
    output:
        predictions=[
            "results/predictions/{arch}/{recipe}/{paradigm}/seed{seed}/{testset}.parquet"
        ],
    log:
        "results/logs/predict/{arch}/{recipe}/{paradigm}/seed{seed}/{testset}.log",
    benchmark:
        "results/benchmarks/predict/{arch}/{recipe}/{paradigm}/seed{seed}/{testset}.tsv"
    wildcard_constraints:
        testset=one_of(EVALUATION_ONLY_TESTSETS),


# The same models with each prompt variant: the second template and k-shot prompts whose
# demonstrations come from the test corpus's own training split (as in arXiv 2403.09162).
rule predict_variants:
    input:
        base="results/models/{arch}/base",
        adapter=adapter_input,
        testsets=expand("results/testsets/{testset}.parquet", testset=SPLIT_TESTSETS),
        pools=expand("results/splits/{testset}.parquet", testset=SPLIT_TESTSETS),
        code=lambda wc: library(*PREDICT_MODULES) + family_library(wc),
    output:
        predictions=expand(
            "results/variants/{{arch}}/{{recipe}}/{{paradigm}}/seed{{seed}}/{variant}/{testset}.parquet",
            variant=VARIANTS,
            testset=SPLIT_TESTSETS,
        ),
    log:
        "results/logs/predict_variants/{arch}/{recipe}/{paradigm}/seed{seed}.log",
    benchmark:
        "results/benchmarks/predict_variants/{arch}/{recipe}/{paradigm}/seed{seed}.tsv"
    wildcard_constraints:
        paradigm=one_of(PROMPT_SCORED),
    conda:
        "../../envs/train.yaml"
    threads: config["compute"]["threads"]
    resources:
        **model_resources(),
    params:
        family=lambda wc: config["models"][wc.arch]["family"],
        prompt=model_prompt,
        variants=VARIANTS,
        # A function: a plain string param would have its "{text}" read as a wildcard.
        alt_template=lambda wc: config["evaluation"]["alt_template"],
        kshot=config["evaluation"]["kshot"],
        quantization=config["training"]["quantization"],
        evaluation={k: config["evaluation"][k] for k in ("batch_size", "threshold")},
        compute={k: config["compute"][k] for k in ("device", "dtype")},
    script:
        "../scripts/predict_variants.py"


# The classical baseline: TF-IDF + logistic regression on a recipe's training split (the LLMs'
# split), written as a prediction file per test set like any model's (arch classical, paradigm tfidf).
rule tfidf_baseline:
    input:
        train="results/datasets/{recipe}/train.parquet",
        val="results/datasets/{recipe}/val.parquet",
        testsets=expand("results/testsets/{testset}.parquet", testset=SPLIT_TESTSETS),
        valsets=VALSETS,
        code=library("evaluate.metrics", "evaluate.classical"),
    output:
        model="results/classical/{recipe}/model.npz",
        predictions=expand(
            f"results/predictions/{CLASSICAL_ARCH}/{{{{recipe}}}}/{CLASSICAL_PARADIGM}/seed{CLASSICAL_SEED}/{{testset}}.parquet",
            testset=SPLIT_TESTSETS,
        ),
        val_predictions=expand(
            f"results/val_predictions/{CLASSICAL_ARCH}/{{{{recipe}}}}/{CLASSICAL_PARADIGM}/seed{CLASSICAL_SEED}/{{testset}}.parquet",
            testset=SPLIT_TESTSETS,
        ),
    log:
        "results/logs/tfidf_baseline/{recipe}.log",
    benchmark:
        "results/benchmarks/tfidf_baseline/{recipe}.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=classical_settings(),
        threshold=config["evaluation"]["threshold"],
    script:
        "../scripts/tfidf_baseline.py"


# The classical baseline of a recipe, saved by tfidf_baseline, on an evaluation-only test set.
rule tfidf_predict:
    input:
        model="results/classical/{recipe}/model.npz",
        testset="results/testsets/{testset}.parquet",
        code=library("evaluate.metrics", "evaluate.classical"),
    output:
        predictions=f"results/predictions/{CLASSICAL_ARCH}/{{recipe}}/{CLASSICAL_PARADIGM}/seed{CLASSICAL_SEED}/{{testset}}.parquet",
    log:
        "results/logs/tfidf_predict/{recipe}/{testset}.log",
    wildcard_constraints:
        testset=one_of(EVALUATION_ONLY_TESTSETS),
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        threshold=config["evaluation"]["threshold"],
    script:
        "../scripts/tfidf_predict.py"


rule prompt_robustness:
    input:
        predictions=[
            f"results/predictions/{run_dir(*run)}/{testset}.parquet"
            for run in variant_runs()
            for testset in SPLIT_TESTSETS
        ],
        variants=variant_predictions(),
        code=library(
            "evaluate.metrics",
            "evaluate.significance",
            "evaluate.robustness",
            "report.tables",
            "report.figures",
        ),
    output:
        table=report(
            multiext("results/tables/prompt_robustness", ".csv", ".md", ".tex"),
            caption="../report/prompt_robustness.rst",
            category="Tables",
        ),
        figure=report(
            multiext("results/figures/prompt_robustness", ".pdf", ".png"),
            caption="../report/prompt_robustness.rst",
            category="Figures",
        ),
    log:
        "results/logs/prompt_robustness.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        runs=variant_runs(),
        variants=VARIANTS,
        testsets=SPLIT_TESTSETS,
        significance=config["evaluation"]["significance"],
        threshold=config["evaluation"]["threshold"],
    script:
        "../scripts/prompt_robustness.py"


rule cross_dataset_table:
    input:
        predictions=all_predictions(),
        val_predictions=all_val_predictions(),
        code=library("evaluate.metrics", "evaluate.operating", "report.tables"),
    output:
        table=report(
            multiext("results/tables/cross_dataset", ".csv", ".md", ".tex"),
            caption="../report/cross_dataset_table.rst",
            category="Tables",
        ),
    log:
        "results/logs/cross_dataset_table.log",
    benchmark:
        "results/benchmarks/cross_dataset_table.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        runs=evaluated_runs(),
        testsets=TESTSETS,
        val_testsets=SPLIT_TESTSETS,
        in_domain=in_domain_map(),
        evaluation={
            k: config["evaluation"][k]
            for k in ("bootstrap_resamples", "seed", "threshold")
        },
    script:
        "../scripts/cross_dataset_table.py"


rule generalisation_gap_table:
    input:
        table="results/tables/cross_dataset.csv",
        code=library("report.tables"),
    output:
        gap=report(
            multiext("results/tables/generalisation_gap", ".csv", ".md", ".tex"),
            caption="../report/generalisation_gap_table.rst",
            category="Tables",
        ),
    log:
        "results/logs/generalisation_gap_table.log",
    benchmark:
        "results/benchmarks/generalisation_gap_table.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        comparison=config["report"],
    script:
        "../scripts/generalisation_gap_table.py"


# Every claim of the study (recipe, paradigm, architecture comparisons) as a paired test.
rule claims_table:
    input:
        predictions=all_predictions(),
        code=library(
            "evaluate.metrics",
            "evaluate.significance",
            "evaluate.claims",
            "report.tables",
        ),
    output:
        table=report(
            multiext("results/tables/claims", ".csv", ".md", ".tex"),
            caption="../report/claims_table.rst",
            category="Claims",
        ),
    log:
        "results/logs/claims_table.log",
    benchmark:
        "results/benchmarks/claims_table.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        runs=evaluated_runs(),
        testsets=TESTSETS,
        in_domain=in_domain_map(),
        comparison=config["report"],
        significance=config["evaluation"]["significance"],
        threshold=config["evaluation"]["threshold"],
    script:
        "../scripts/claims_table.py"


rule study_summary:
    input:
        claims="results/tables/claims.csv",
        cross="results/tables/cross_dataset.csv",
        shap=summary_extra_tables()["shap"],
        circuits=summary_extra_tables()["circuits"],
        label_audit=summary_extra_tables()["label_audit"],
        code=library("evaluate.claims", "report.tables", "report.summary"),
    output:
        summary=report(
            "results/report/summary.md",
            caption="../report/study_summary.rst",
            category="Claims",
        ),
    log:
        "results/logs/study_summary.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        significance=config["evaluation"]["significance"],
    script:
        "../scripts/study_summary.py"


rule seed_summary_table:
    input:
        table="results/tables/cross_dataset.csv",
        code=library("evaluate.significance", "report.tables"),
    output:
        table=report(
            multiext("results/tables/seed_summary", ".csv", ".md", ".tex"),
            caption="../report/seed_summary_table.rst",
            category="Tables",
        ),
    log:
        "results/logs/seed_summary_table.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        confidence=config["evaluation"]["significance"]["confidence"],
    script:
        "../scripts/seed_summary_table.py"
