# Chain-of-thought targets: one rationale per training and validation message of a recipe,
# derived from the message's cues (`cues`) or read from the user's table (`file`).
rule rationales:
    input:
        train="results/datasets/{recipe}/train.parquet",
        val="results/datasets/{recipe}/val.parquet",
        table=lambda wc: (
            config["training"]["cot"]["file"]
            if config["training"]["cot"]["rationales"] == "file"
            else []
        ),
        code=library("finetune.rationales", "data.synthetic"),
    output:
        rationales="results/rationales/{recipe}.parquet",
    log:
        "results/logs/rationales/{recipe}.log",
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        cot={
            k: config["training"]["cot"][k]
            for k in ("rationales", "max_cues", "column")
        },
        label_words=config["prompt"]["label_words"],
    script:
        "../scripts/rationales.py"


rule finetune:
    input:
        base="results/models/{arch}/base",
        train="results/datasets/{recipe}/train.parquet",
        val="results/datasets/{recipe}/val.parquet",
        rationales=rationales_input,
        code=lambda wc: library(
            "prompts",
            "models.__init__",
            "models.loading",
            "models.inputs",
            "finetune.rationales",
            "finetune.paradigms",
            "finetune.qlora",
            "data.synthetic",
        )
        + family_library(wc),
    output:
        adapter=directory(
            "results/finetune/{arch}/{recipe}/{paradigm}/seed{seed}/adapter"
        ),
        train_log="results/finetune/{arch}/{recipe}/{paradigm}/seed{seed}/train_log.csv",
        summary="results/finetune/{arch}/{recipe}/{paradigm}/seed{seed}/summary.json",
    log:
        "results/logs/finetune/{arch}/{recipe}/{paradigm}/seed{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{arch}/{recipe}/{paradigm}/seed{seed}.tsv"
    wildcard_constraints:
        paradigm=one_of(TUNED_PARADIGMS),
    conda:
        "../../envs/train.yaml"
    threads: config["compute"]["threads"]
    resources:
        **model_resources(),
    params:
        family=lambda wc: config["models"][wc.arch]["family"],
        lora=lambda wc: config["models"][wc.arch]["lora"],
        training=training_params,
        prompt=config["prompt"],
        compute={k: config["compute"][k] for k in ("device", "dtype")},
        # Outside the output folder: Snakemake deletes outputs before a rerun, checkpoints must survive.
        checkpoint_dir="results/checkpoints/{arch}/{recipe}/{paradigm}/seed{seed}",
    script:
        "../scripts/finetune.py"


# How far fine-tuning moved each layer: mean |ΔW| of the merged LoRA update, from the adapters alone.
rule weight_drift:
    input:
        adapters=[f"results/finetune/{run_dir(*run)}/adapter" for run in tuned_runs()],
        code=library("finetune.drift", "report.drift_figures", "report.tables"),
    output:
        table=report(
            multiext("results/tables/weight_drift", ".csv", ".md", ".tex"),
            caption="../report/weight_drift.rst",
            category="Fine-tuning",
        ),
        figure=report(
            multiext("results/figures/weight_drift", ".pdf", ".png"),
            caption="../report/weight_drift.rst",
            category="Fine-tuning",
        ),
    log:
        "results/logs/weight_drift.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        runs=tuned_runs(),
    script:
        "../scripts/weight_drift.py"
