rule report:
    input:
        **TUNING_OUTPUTS,
        # The reference's recipe, which the report states beside its results.
        train_records=all_train_records,
        eval_records=all_eval_records,
        # Parallel to eval_records: each run's per-review predictions, for the paired tests.
        predictions=all_predictions,
        reference_recipe=REFERENCE_RECIPE,
    output:
        **({"tuning_summary": TUNING_SUMMARY} if TUNED_CELLS else {}),
        # Per model and strategy: the primary metric on each task, mean rank, wins/ties/losses.
        **(
            {
                "across": report(
                    f"results/{ACROSS_TABLE}",
                    caption="../report/summary_across_tasks.rst",
                    category=REPORT_CATEGORY,
                    subcategory=REPORT_SUBCATEGORY,
                    labels={
                        "strategy": "all",
                        "seed": "all",
                        "item": "across-task table",
                    },
                )
            }
            if ACROSS
            else {}
        ),
        # Grouped as the runs are (task, model), under the strategy "all".
        summary=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category=REPORT_CATEGORY,
            subcategory=REPORT_SUBCATEGORY,
            labels={"strategy": "all", "seed": "all", "item": "summary table"},
        ),
        by_strategy=report(
            "results/summary_by_strategy.csv",
            caption="../report/summary_by_strategy.rst",
            category=REPORT_CATEGORY,
            subcategory=REPORT_SUBCATEGORY,
            labels={"strategy": "all", "seed": "all", "item": "per-strategy table"},
        ),
        report=report(
            "results/report.md",
            caption="../report/report.rst",
            category=REPORT_CATEGORY,
            subcategory=REPORT_SUBCATEGORY,
            labels={"strategy": "all", "seed": "all", "item": "written comparison"},
        ),
        # report.md as HTML, figures embedded: the HTML report's landing page shows it
        # (workflow/report/workflow.rst reads it beside report.md, named after it).
        page="results/report.md.html",
        # Every tuned cell's trials in one table, beside each cell's own.
        figures=[
            report(
                figure,
                caption="../report/figures.rst",
                category=FIGURE_PLACES[figure]["category"],
                subcategory=FIGURE_PLACES[figure]["subcategory"],
                labels={
                    "strategy": "all",
                    "seed": "all",
                    "item": FIGURE_PLACES[figure]["item"],
                },
            )
            for figure in FIGURES
        ],
    log:
        "results/logs/report.log",
    conda:
        "../envs/report.yaml"
    resources:
        mem_mb=2000,
        runtime=minutes(15),
    params:
        reference=STUDY["report"]["reference"],
        baseline=STUDY["report"]["baseline"],
        sort_by=STUDY["report"]["sort_by"],
        equivalence_margin=STUDY["report"]["equivalence_margin"],
        # Each task's data block: where it is a GLUE task, the published figures stand beside ours.
        datasets=STUDY["tasks"],
    script:
        "../scripts/report.py"
