rule report:
    input:
        train_records=all_train_records,
        eval_records=all_eval_records,
    output:
        summary=report(
            "results/summary.csv", caption="../report/summary.rst", category="Summary"
        ),
        report=report(
            "results/report.md", caption="../report/report.rst", category="Summary"
        ),
        figures=report(FIGURES, caption="../report/figures.rst", category="Figures"),
    log:
        "results/logs/report.log",
    conda:
        "../envs/report.yaml"
    resources:
        mem_mb=2000,
        runtime=minutes(15),
    script:
        "../scripts/report.py"
