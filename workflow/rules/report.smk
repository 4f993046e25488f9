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
    params:
        reference=VALIDATED["report"]["reference"],
    script:
        "../scripts/report.py"
