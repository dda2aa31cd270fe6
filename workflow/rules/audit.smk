rule audit_corpus:
    input:
        corpus="results/corpora/{corpus}.parquet",
        ingest="results/ingested/{corpus}.ingest.json",
        normalise="results/corpora/{corpus}.normalise.json",
        code=library("data.splits", "data.dedup", "data.audit"),
    output:
        audit="results/audit/{corpus}.json",
        suspects="results/audit/{corpus}.suspects.csv",
    log:
        "results/logs/audit_corpus/{corpus}.log",
    benchmark:
        "results/benchmarks/audit_corpus/{corpus}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        audit=config["audit"],
    script:
        "../scripts/audit_corpus.py"


rule audit_across:
    input:
        corpora=expand("results/corpora/{corpus}.parquet", corpus=CORPORA),
        splits=expand("results/splits/{corpus}.parquet", corpus=CORPORA),
        code=library("data.splits", "data.dedup", "data.audit"),
    output:
        audit="results/audit/across.json",
    log:
        "results/logs/audit_across.log",
    benchmark:
        "results/benchmarks/audit_across.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
    params:
        audit=config["audit"],
    script:
        "../scripts/audit_across.py"


rule data_audit_table:
    input:
        audits=expand("results/audit/{corpus}.json", corpus=CORPORA),
        across="results/audit/across.json",
        code=library("data.audit", "report.tables"),
    output:
        csv=report(
            "results/tables/data_audit.csv",
            caption="../report/data_audit_table.rst",
            category="Data audit",
        ),
        md="results/tables/data_audit.md",
        tex="results/tables/data_audit.tex",
    log:
        "results/logs/data_audit_table.log",
    benchmark:
        "results/benchmarks/data_audit_table.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/data_audit_table.py"


rule figure_data_audit:
    input:
        audits=expand("results/audit/{corpus}.json", corpus=CORPORA),
        across="results/audit/across.json",
        code=library("data.audit", "report.figures"),
    output:
        pdf="results/figures/data_audit.pdf",
        png=report(
            "results/figures/data_audit.png",
            caption="../report/data_audit.rst",
            category="Data audit",
        ),
    log:
        "results/logs/figure_data_audit.log",
    benchmark:
        "results/benchmarks/figure_data_audit.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/figure_data_audit.py"


rule figure_source_identifiability:
    input:
        across="results/audit/across.json",
        code=library("report.figures"),
    output:
        pdf="results/figures/source_identifiability.pdf",
        png=report(
            "results/figures/source_identifiability.png",
            caption="../report/source_identifiability.rst",
            category="Data audit",
        ),
    log:
        "results/logs/figure_source_identifiability.log",
    benchmark:
        "results/benchmarks/figure_source_identifiability.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/figure_source_identifiability.py"


# The seed study's same-model audit: each standard fine-tuned model scores its own training split.
rule model_audit:
    input:
        base="results/models/{arch}/base",
        adapter="results/finetune/{arch}/{recipe}/standard/seed{seed}/adapter",
        train="results/datasets/{recipe}/train.parquet",
        suspects=lambda wc: expand(
            "results/audit/{corpus}.suspects.csv",
            corpus=config["recipes"][wc.recipe]["corpora"],
        ),
        code=lambda wc: library(*PREDICT_MODULES, "data.model_audit")
        + family_library(wc),
    output:
        messages="results/model_audit/{arch}/{recipe}/seed{seed}.csv",
        summary="results/model_audit/{arch}/{recipe}/seed{seed}.json",
    log:
        "results/logs/model_audit/{arch}/{recipe}/seed{seed}.log",
    benchmark:
        "results/benchmarks/model_audit/{arch}/{recipe}/seed{seed}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: config["compute"]["threads"]
    resources:
        **model_resources(),
    params:
        family=lambda wc: config["models"][wc.arch]["family"],
        prompt=model_prompt,
        options=config["audit"]["same_model"],
        seed=config["audit"]["seed"],
        batch_size=config["evaluation"]["batch_size"],
        quantization=config["training"]["quantization"],
        compute={k: config["compute"][k] for k in ("device", "dtype")},
    script:
        "../scripts/model_audit.py"


rule model_audit_table:
    input:
        summaries=[
            f"results/model_audit/{arch}/{recipe}/seed{seed}.json"
            for arch, recipe, seed in model_audit_runs()
        ],
        code=library("data.model_audit", "report.tables"),
    output:
        csv=report(
            "results/tables/model_audit.csv",
            caption="../report/model_audit_table.rst",
            category="Data audit",
        ),
        md="results/tables/model_audit.md",
        tex="results/tables/model_audit.tex",
    log:
        "results/logs/model_audit_table.log",
    benchmark:
        "results/benchmarks/model_audit_table.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/model_audit_table.py"
