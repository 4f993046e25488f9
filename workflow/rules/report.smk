rule report:
    input:
        train_records=all_train_records,
        eval_records=all_eval_records,
        # Parallel to eval_records: each run's per-review predictions, for the paired tests.
        predictions=all_predictions,
        tuning=TUNING_OUTPUTS,
        # The reference's recipe, which the report states beside its results.
        reference_recipe=REFERENCE_RECIPE,
    output:
        summary=report(
            "results/summary.csv", caption="../report/summary.rst", category="Summary"
        ),
        by_strategy=report(
            "results/summary_by_strategy.csv",
            caption="../report/summary_by_strategy.rst",
            category="Summary",
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
    params:
        reference=VALIDATED["report"]["reference"],
        baseline=VALIDATED["report"]["baseline"],
        sort_by=VALIDATED["report"]["sort_by"],
    script:
        "../scripts/report.py"
