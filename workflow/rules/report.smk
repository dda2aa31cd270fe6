rule figure_cross_dataset_f1:
    input:
        table="results/tables/cross_dataset.csv",
        code=library("report.figures"),
    output:
        pdf="results/figures/cross_dataset_f1.pdf",
        png=report(
            "results/figures/cross_dataset_f1.png",
            caption="../report/cross_dataset_f1.rst",
            category="Figures",
        ),
    log:
        "results/logs/figure_cross_dataset_f1.log",
    benchmark:
        "results/benchmarks/figure_cross_dataset_f1.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        recipe_order=list(dict.fromkeys(run[1] for run in evaluated_runs())),
        testset_order=TESTSETS,
    script:
        "../scripts/figure_cross_dataset_f1.py"


# ROC and DET curves per test set, every model on one axis, with its operating point at the threshold.
rule figure_roc_curves:
    input:
        predictions=all_predictions(),
        code=library(
            "evaluate.metrics",
            "evaluate.classical",
            "report.figures",
            "report.curve_figures",
        ),
    output:
        roc_pdf="results/figures/roc_curves.pdf",
        roc_png=report(
            "results/figures/roc_curves.png",
            caption="../report/roc_curves.rst",
            category="Figures",
        ),
        det_pdf="results/figures/det_curves.pdf",
        det_png=report(
            "results/figures/det_curves.png",
            caption="../report/det_curves.rst",
            category="Figures",
        ),
    log:
        "results/logs/figure_roc_curves.log",
    benchmark:
        "results/benchmarks/figure_roc_curves.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        runs=evaluated_runs(),
        testsets=TESTSETS,
        threshold=config["evaluation"]["threshold"],
    script:
        "../scripts/figure_roc_curves.py"


rule figure_training_curves:
    input:
        logs=all_train_logs(),
        code=library("report.figures"),
    output:
        pdf="results/figures/training_curves.pdf",
        png=report(
            "results/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="Figures",
        ),
    log:
        "results/logs/figure_training_curves.log",
    benchmark:
        "results/benchmarks/figure_training_curves.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/figure_training_curves.py"


rule figure_generalisation_gap:
    input:
        table="results/tables/generalisation_gap.csv",
        code=library("report.figures"),
    output:
        pdf="results/figures/generalisation_gap.pdf",
        png=report(
            "results/figures/generalisation_gap.png",
            caption="../report/generalisation_gap.rst",
            category="Figures",
        ),
    log:
        "results/logs/figure_generalisation_gap.log",
    benchmark:
        "results/benchmarks/figure_generalisation_gap.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/figure_generalisation_gap.py"
