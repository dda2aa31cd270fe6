localrules:
    download,


rule download:
    output:
        "resources/downloads/{filename}",
    log:
        "results/logs/download/{filename}.log",
    wildcard_constraints:
        filename=one_of(DOWNLOADS),
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,
    params:
        url=lambda wc: DOWNLOADS[wc.filename]["url"],
        sha256=lambda wc: DOWNLOADS[wc.filename]["sha256"],
    script:
        "../scripts/download.py"


rule ingest:
    input:
        vocabulary=lambda wc: (
            "resources/synthetic/styles.yaml"
            if config["corpora"][wc.corpus].get("loader") == "synthetic"
            else []
        ),
        raw=lambda wc: list(source_files(wc.corpus).values()),
        code=library(
            "data.__init__",
            "data.corpus",
            "data.synthetic",
            "data.loaders",
            "data.mime",
            "data.normalise",
        ),
    output:
        corpus="results/ingested/{corpus}.parquet",
        quarantine="results/ingested/{corpus}.quarantine.parquet",
        report="results/ingested/{corpus}.ingest.json",
    log:
        "results/logs/ingest/{corpus}.log",
    benchmark:
        "results/benchmarks/ingest/{corpus}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        spec=lambda wc: corpus_spec(wc.corpus),
        files=lambda wc: source_files(wc.corpus),
    script:
        "../scripts/ingest.py"


rule normalise:
    input:
        corpus="results/ingested/{corpus}.parquet",
        code=library("data.corpus", "data.mime", "data.normalise"),
    output:
        corpus="results/corpora/{corpus}.parquet",
        quarantine="results/corpora/{corpus}.quarantine.parquet",
        report="results/corpora/{corpus}.normalise.json",
    log:
        "results/logs/normalise/{corpus}.log",
    benchmark:
        "results/benchmarks/normalise/{corpus}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        spec=lambda wc: corpus_spec(wc.corpus),
        options=config["normalise"],
    script:
        "../scripts/normalise.py"


rule split:
    input:
        corpus="results/corpora/{corpus}.parquet",
        code=library("data.splits", "data.dedup"),
    output:
        splits="results/splits/{corpus}.parquet",
        report="results/splits/{corpus}.json",
    log:
        "results/logs/split/{corpus}.log",
    benchmark:
        "results/benchmarks/split/{corpus}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        fractions=split_fractions,
        seed=config["splits"]["seed"],
        near_duplicate_threshold=config["splits"]["near_duplicate_threshold"],
    script:
        "../scripts/split.py"


rule compose_recipe:
    input:
        splits=lambda wc: expand(
            "results/splits/{corpus}.parquet",
            corpus=config["recipes"][wc.recipe]["corpora"],
        ),
        code=library("data.splits"),
    output:
        train="results/datasets/{recipe}/train.parquet",
        val="results/datasets/{recipe}/val.parquet",
        report="results/datasets/{recipe}/report.json",
    log:
        "results/logs/compose_recipe/{recipe}.log",
    benchmark:
        "results/benchmarks/compose_recipe/{recipe}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        recipe=lambda wc: config["recipes"][wc.recipe],
    script:
        "../scripts/compose_recipe.py"


rule testset:
    input:
        splits="results/splits/{testset}.parquet",
        code=library("data.splits"),
    output:
        testset="results/testsets/{testset}.parquet",
    log:
        "results/logs/testset/{testset}.log",
    benchmark:
        "results/benchmarks/testset/{testset}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        split="test",
        max_size=config["evaluation"]["max_test_size"],
        seed=config["evaluation"]["seed"],
    script:
        "../scripts/testset.py"


# The validation split of a test set's corpus, on which every model's threshold is re-tuned
# (f1_retuned in cross_dataset.csv): drawn like the test set, disjoint from it. An evaluation-only
# corpus has none.
rule valset:
    input:
        splits="results/splits/{testset}.parquet",
        code=library("data.splits"),
    output:
        valset="results/valsets/{testset}.parquet",
    log:
        "results/logs/valset/{testset}.log",
    benchmark:
        "results/benchmarks/valset/{testset}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        split="val",
        max_size=config["evaluation"]["max_test_size"],
        seed=config["evaluation"]["seed"],
    script:
        "../scripts/testset.py"
