rule report:
    input:
        **PLAN.tuning_outputs,
        # The reference's recipe, which the report states beside its results.
        train_records=PLAN.every_run("train.json"),
        eval_records=PLAN.every_run("eval.json"),
        # Parallel to eval_records: each run's per-review predictions, for the paired tests.
        predictions=PLAN.every_run("predictions.parquet"),
        reference_recipe=REFERENCE_RECIPE,
    output:
        **({"tuning_summary": TUNING_SUMMARY} if PLAN.tuned_cells else {}),
        # Per model and strategy: the primary metric on each task, mean rank, wins/ties/losses.
        **(
            {
                "across": report(
                    f"results/{ACROSS_TABLE}",
                    caption="../report/summary_across_tasks.rst",
                    category=PLAN.report_place[0],
                    subcategory=PLAN.report_place[1],
                    labels={
                        "strategy": "all",
                        "seed": "all",
                        "item": "across-task table",
                    },
                )
            }
            if PLAN.across
            else {}
        ),
        # Grouped as the runs are (task, model), under the strategy "all".
        summary=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category=PLAN.report_place[0],
            subcategory=PLAN.report_place[1],
            labels={"strategy": "all", "seed": "all", "item": "summary table"},
        ),
        by_strategy=report(
            "results/summary_by_strategy.csv",
            caption="../report/summary_by_strategy.rst",
            category=PLAN.report_place[0],
            subcategory=PLAN.report_place[1],
            labels={"strategy": "all", "seed": "all", "item": "per-strategy table"},
        ),
        report=report(
            "results/report.md",
            caption="../report/report.rst",
            category=PLAN.report_place[0],
            subcategory=PLAN.report_place[1],
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
                category=PLAN.figure_places[figure]["category"],
                subcategory=PLAN.figure_places[figure]["subcategory"],
                labels={
                    "strategy": "all",
                    "seed": "all",
                    "item": PLAN.figure_places[figure]["item"],
                },
            )
            for figure in PLAN.figures
        ],
    log:
        "results/logs/report.log",
    conda:
        "../envs/report.yaml"
    resources:
        mem_mb=2000,
        runtime=minutes(15),
    params:
        reference=PLAN.study["report"]["reference"],
        baseline=PLAN.study["report"]["baseline"],
        sort_by=PLAN.study["report"]["sort_by"],
        equivalence_margin=PLAN.study["report"]["equivalence_margin"],
        # Each task's data block: where it is a GLUE task, the published figures stand beside ours.
        datasets=PLAN.study["tasks"],
    script:
        "../scripts/report.py"
