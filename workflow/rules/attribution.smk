# SHAP token attribution of every fine-tuned model on every explained test set, checked for
# faithfulness against random attributions and, on synthetic corpora, against the planted cues.


rule shap_explain:
    input:
        base="results/models/{arch}/base",
        adapter="results/finetune/{arch}/{recipe}/{paradigm}/seed{seed}/adapter",
        testset="results/testsets/{testset}.parquet",
        predictions="results/predictions/{arch}/{recipe}/{paradigm}/seed{seed}/{testset}.parquet",
        code=lambda wc: library(
            "prompts",
            "models.__init__",
            "models.loading",
            "models.inputs",
            "models.merge",
            "evaluate.predict",
            "attribution.__init__",
            "attribution.explain",
            "attribution.faithfulness",
            "attribution.study",
        )
        + family_library(wc),
    output:
        tokens="results/shap/{arch}/{recipe}/{paradigm}/seed{seed}/{testset}.tokens.parquet",
        messages="results/shap/{arch}/{recipe}/{paradigm}/seed{seed}/{testset}.messages.parquet",
        curves="results/shap/{arch}/{recipe}/{paradigm}/seed{seed}/{testset}.curves.parquet",
    log:
        "results/logs/shap_explain/{arch}/{recipe}/{paradigm}/seed{seed}/{testset}.log",
    benchmark:
        "results/benchmarks/shap_explain/{arch}/{recipe}/{paradigm}/seed{seed}/{testset}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: config["compute"]["threads"]
    resources:
        **model_resources(),
    params:
        family=lambda wc: config["models"][wc.arch]["family"],
        prompt=model_prompt,
        quantization=config["training"]["quantization"],
        shap={k: v for k, v in config["shap"].items() if k in SHAP_JOB_KEYS},
        compute={k: config["compute"][k] for k in ("device", "dtype")},
    script:
        "../scripts/shap_explain.py"


rule shap_token_sources:
    input:
        base="results/models/{arch}/base",
        splits=expand("results/splits/{corpus}.parquet", corpus=SPLIT_CORPORA),
        audit="results/audit/across.json",
        code=library("models.loading", "attribution.__init__", "attribution.aggregate"),
    output:
        scores="results/shap/{arch}/token_sources.parquet",
    log:
        "results/logs/shap_token_sources/{arch}.log",
    benchmark:
        "results/benchmarks/shap_token_sources/{arch}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/shap_token_sources.py"


rule shap_tables:
    input:
        tokens=[shap_output(job, "tokens") for job in shap_jobs()],
        messages=[shap_output(job, "messages") for job in shap_jobs()],
        sources=expand("results/shap/{arch}/token_sources.parquet", arch=sorted(MODELS)),
        code=library("attribution.__init__", "attribution.aggregate", "report.tables"),
    output:
        top=report(
            multiext("results/tables/shap_top_tokens", ".csv", ".md", ".tex"),
            caption="../report/shap_top_tokens_table.rst",
            category="Attribution",
        ),
        comparison=report(
            multiext("results/tables/shap_comparison", ".csv", ".md", ".tex"),
            caption="../report/shap_comparison_table.rst",
            category="Attribution",
        ),
        faithfulness=report(
            multiext("results/tables/shap_faithfulness", ".csv", ".md", ".tex"),
            caption="../report/shap_faithfulness_table.rst",
            category="Attribution",
        ),
    log:
        "results/logs/shap_tables.log",
    benchmark:
        "results/benchmarks/shap_tables.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        jobs=shap_jobs(),
        source_archs=sorted(MODELS),
        shap={
            k: config["shap"][k]
            for k in ("top_tokens", "min_token_count", "artefact_threshold", "cue_k")
        },
    script:
        "../scripts/shap_tables.py"


rule figure_shap_top_tokens:
    input:
        table="results/tables/shap_top_tokens.csv",
        code=library("report.figures"),
    output:
        pdf="results/figures/shap_top_tokens.pdf",
        png=report(
            "results/figures/shap_top_tokens.png",
            caption="../report/shap_top_tokens.rst",
            category="Attribution",
        ),
    log:
        "results/logs/figure_shap_top_tokens.log",
    benchmark:
        "results/benchmarks/figure_shap_top_tokens.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/figure_shap_top_tokens.py"


rule figure_shap_faithfulness:
    input:
        curves=[shap_output(job, "curves") for job in shap_jobs()],
        code=library("attribution.__init__", "attribution.aggregate", "report.figures"),
    output:
        pdf="results/figures/shap_faithfulness.pdf",
        png=report(
            "results/figures/shap_faithfulness.png",
            caption="../report/shap_faithfulness.rst",
            category="Attribution",
        ),
    log:
        "results/logs/figure_shap_faithfulness.log",
    benchmark:
        "results/benchmarks/figure_shap_faithfulness.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        jobs=shap_jobs(),
    script:
        "../scripts/figure_shap_faithfulness.py"


rule figure_shap_heatmaps:
    input:
        messages=lambda wc: [
            shap_output(job, "messages") for job in shap_jobs() if job[0] == wc.arch
        ],
        tokens=lambda wc: [
            shap_output(job, "tokens") for job in shap_jobs() if job[0] == wc.arch
        ],
        code=library(
            "attribution.__init__",
            "attribution.aggregate",
            "report.figures",
            "report.html",
        ),
    output:
        pdf="results/figures/shap_text_heatmaps_{arch}.pdf",
        png=report(
            "results/figures/shap_text_heatmaps_{arch}.png",
            caption="../report/shap_text_heatmaps.rst",
            category="Attribution",
            subcategory="{arch}",
        ),
        html=report(
            "results/report/shap_text_heatmaps_{arch}.html",
            caption="../report/shap_text_heatmaps_html.rst",
            category="Attribution",
            subcategory="{arch}",
        ),
    log:
        "results/logs/figure_shap_heatmaps/{arch}.log",
    benchmark:
        "results/benchmarks/figure_shap_heatmaps/{arch}.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        jobs=lambda wc: [job for job in shap_jobs() if job[0] == wc.arch],
        n_messages=config["shap"]["heatmap_messages"],
    script:
        "../scripts/figure_shap_heatmaps.py"
