# Chain-of-thought targets: one rationale per training and validation message of a recipe,
# derived from the message's cues (`cues`) or read from the user's table (`file`).
rule rationales:
    input:
        train="results/datasets/{recipe}/train.parquet",
        val="results/datasets/{recipe}/val.parquet",
        table=lambda wc: COT["file"] if COT["rationales"] == "file" else [],
        teacher=teacher_base(),
        code=library("finetune.rationales", "data.synthetic", *teacher_modules()),
    output:
        rationales="results/rationales/{recipe}.parquet",
    log:
        "results/logs/rationales/{recipe}.log",
    benchmark:
        "results/benchmarks/rationales/{recipe}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: config["compute"]["threads"] if TEACHER else 1
    resources:
        **(model_resources() if TEACHER else {"mem_mb": 2000, "runtime": 30}),
    params:
        cot=rationales_params(),
        family=teacher_family(),
        compute=(
            {k: config["compute"][k] for k in ("device", "dtype")} if TEACHER else None
        ),
        label_words=config["prompt"]["label_words"],
    script:
        "../scripts/rationales.py"


rule teacher_hub:
    input:
        code=library("models.base"),
    output:
        base=directory("results/teacher/base"),
    log:
        "results/logs/teacher_hub.log",
    localrule: True
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    params:
        model_id=(TEACHER or {}).get("id"),
        revision=(TEACHER or {}).get("revision"),
    script:
        "../scripts/base_hub.py"


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
        prompt=model_prompt,
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
