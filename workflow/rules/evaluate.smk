rule evaluate:
    input:
        dataset=TOKENIZED_DIR,
        record="results/runs/{strategy}/seed{seed}/train.json",
        model="results/runs/{strategy}/seed{seed}/model",
        base_model=base_model,
        # For the model card: the data it was trained and tested on.
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
        # The run's model card: it needs the test metrics, so this job writes it.
        card="results/runs/{strategy}/seed{seed}/README.md",
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
        # The model as the config names it: train.json is checked against it, never
        # trusted to name a package to import.
        study_model=config["model"]["name_or_path"],
    script:
        "../scripts/evaluate.py"
