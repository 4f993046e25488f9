rule evaluate:
    input:
        dataset=TOKENIZED_DIR,
        record="results/runs/{strategy}/seed{seed}/train.json",
        model="results/runs/{strategy}/seed{seed}/model",
        base_model=base_model,
        # For the model card (README.md) the job writes into the model folder: the card
        # needs the test metrics. Snakemake dates a directory by its .snakemake_timestamp,
        # so the card changes nothing in the plan.
        data_summary=f"{DATA_DIR}/summary.json",
    output:
        record=report(
            "results/runs/{strategy}/seed{seed}/eval.json",
            caption="../report/eval_record.rst",
            category=REPORT_TASK,
            subcategory=REPORT_MODEL,
            labels={"strategy": "{strategy}", "seed": "{seed}", "item": "test record"},
        ),
        predictions="results/runs/{strategy}/seed{seed}/predictions.parquet",
    log:
        "results/logs/evaluate/{strategy}_seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{strategy}_seed{seed}.tsv"
    conda:
        "../envs/train.yaml"
    # On a GPU these feed the data, and 4 is plenty: `--cores 16 --resources gpu=4` runs
    # four GPU jobs at once. On a CPU, torch's kernels use them (Snakemake caps threads
    # at --cores).
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=minutes(60),
    params:
        # As in finetune: a failed evaluation is retried by a plain rerun.
        retry_marker=evaluate_retry_marker,
        attempt=EVALUATE_ATTEMPT,
    script:
        "../scripts/evaluate.py"
