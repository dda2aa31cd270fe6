# Circuit analysis with TransformerLens of every fine-tuned model: minimal pairs, logit lens,
# direct logit attribution, activation and attribution patching, attention on the edited tokens.


rule circuits_analyse:
    input:
        base="results/models/{arch}/base",
        adapter="results/finetune/{arch}/{recipe}/{paradigm}/seed{seed}/adapter",
        testsets=expand("results/testsets/{testset}.parquet", testset=CIRCUITS_TESTSETS),
        predictions=expand(
            "results/predictions/{{arch}}/{{recipe}}/{{paradigm}}/seed{{seed}}/{testset}.parquet",
            testset=CIRCUITS_TESTSETS,
        ),
        code=lambda wc: library(
            "prompts",
            "models.__init__",
            "models.loading",
            "models.inputs",
            "models.merge",
            "evaluate.predict",
            "data.synthetic",
            "circuits.__init__",
            "circuits.architectures",
            "circuits.bridge",
            "circuits.pairs",
            "circuits.edits",
            "circuits.patching",
            "circuits.study",
        ),
    output:
        **{
            table: f"results/circuits/{{arch}}/{{recipe}}/{{paradigm}}/seed{{seed}}/{table}.parquet"
            for table in CIRCUITS_TABLES
        },
    log:
        "results/logs/circuits_analyse/{arch}/{recipe}/{paradigm}/seed{seed}.log",
    benchmark:
        "results/benchmarks/circuits_analyse/{arch}/{recipe}/{paradigm}/seed{seed}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: config["compute"]["threads"]
    resources:
        **model_resources(),
    params:
        family=lambda wc: config["models"][wc.arch]["family"],
        testsets=CIRCUITS_TESTSETS,
        prompt=model_prompt,
        quantization=config["training"]["quantization"],
        batch_size=config["evaluation"]["batch_size"],
        circuits={k: v for k, v in config["circuits"].items() if k != "testsets"},
        compute={k: config["compute"][k] for k in ("device", "dtype")},
    script:
        "../scripts/circuits_analyse.py"


rule circuits_tables:
    input:
        **{
            table: [circuits_output(run, table) for run in circuits_runs()]
            for table in ("pairs", "drops", "agreement", "lens", "resid", "heads")
        },
        code=library(
            "circuits.__init__", "circuits.study", "circuits.summary", "report.tables"
        ),
    output:
        summary=report(
            multiext("results/tables/circuits_summary", ".csv", ".md", ".tex"),
            caption="../report/circuits_summary_table.rst",
            category="Circuits",
        ),
        pairs=report(
            multiext("results/tables/circuits_pairs", ".csv", ".md", ".tex"),
            caption="../report/circuits_pairs_table.rst",
            category="Circuits",
        ),
    log:
        "results/logs/circuits_tables.log",
    benchmark:
        "results/benchmarks/circuits_tables.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        runs=circuits_runs(),
        top_heads=config["circuits"]["top_heads"],
    script:
        "../scripts/circuits_tables.py"


rule figure_circuits:
    input:
        unpack(
            lambda wc: {
                table: [circuits_output(run, table) for run in circuits_runs()]
                for table in CIRCUIT_FIGURE_TABLES[wc.figure]
            }
        ),
        code=library(
            "circuits.__init__",
            "circuits.summary",
            "report.figures",
            "report.tables",
            "report.circuit_figures",
        ),
    output:
        pdf="results/figures/{figure}.pdf",
        png=report(
            "results/figures/{figure}.png",
            caption="../report/circuits_figures.rst",
            category="Circuits",
        ),
    log:
        "results/logs/figure_circuits/{figure}.log",
    benchmark:
        "results/benchmarks/figure_circuits/{figure}.tsv"
    wildcard_constraints:
        figure=one_of(list(CIRCUIT_FIGURE_TABLES)),
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        runs=circuits_runs(),
        tables=lambda wc: CIRCUIT_FIGURE_TABLES[wc.figure],
        report=config["report"],
    script:
        "../scripts/figure_circuits.py"


rule figure_attention_pairs:
    input:
        attention=lambda wc: [
            circuits_output(run, "attention")
            for run in circuits_runs()
            if run[0] == wc.arch
        ],
        code=library(
            "circuits.__init__",
            "circuits.summary",
            "report.figures",
            "report.tables",
            "report.circuit_figures",
        ),
    output:
        pdf="results/figures/attention_pairs_{arch}.pdf",
        png=report(
            "results/figures/attention_pairs_{arch}.png",
            caption="../report/attention_pairs.rst",
            category="Circuits",
            subcategory="{arch}",
        ),
    log:
        "results/logs/figure_attention_pairs/{arch}.log",
    benchmark:
        "results/benchmarks/figure_attention_pairs/{arch}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        runs=lambda wc: [run for run in circuits_runs() if run[0] == wc.arch],
    script:
        "../scripts/figure_attention_pairs.py"
