rule evaluate:
    input:
        # The cell's tokenized data and fetched model, and for the model card its data summary.
        unpack(evaluate_inputs),
        record=f"{RUN}/train.json",
        model=f"{RUN}/model",
    output:
        record=report(
            f"{RUN}/eval.json",
            caption="../report/eval_record.rst",
            category="{task}",
            subcategory="{model}",
            labels={"strategy": "{strategy}", "seed": "{seed}", "item": "test record"},
        ),
        predictions=f"{RUN}/predictions.parquet",
        # The run's model card: it needs the test metrics, so this job writes it.
        card=f"{RUN}/README.md",
    log:
        "results/logs/evaluate/{task}/{model}/{strategy}_seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{task}/{model}/{strategy}_seed{seed}.tsv"
    # A short one runs in a group on a cluster (ftcompare.plan.cost).
    group:
        PLAN.group_of("evaluate")
    conda:
        "../envs/train.yaml"
    # On a GPU these feed the data, and 4 is plenty: `--cores 16 --resources gpu=4` runs
    # four GPU jobs at once. On a CPU, torch's kernels use them (Snakemake caps threads
    # at --cores).
    threads: 4
    # Runtime sized as finetune's: one pass over the test split. Its SLURM signal as
    # finetune's: the members of a group must ask for the same sbatch flags (an
    # evaluation signalled before its limit ends, and its retry starts it again).
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=PLAN.runtime_of("evaluate"),
        slurm_extra="'--signal=TERM@300'",
    params:
        # As in finetune: a failed evaluation is retried by a plain rerun.
        retry_marker=retry_marker_of(EVALUATE_ATTEMPT),
        attempt=EVALUATE_ATTEMPT,
        # The model as the config names it: train.json is checked against it, never
        # trusted to name a package to import.
        study_model=lambda wildcards: PLAN.model_name_or_path(
            wildcards.task, wildcards.model
        ),
    script:
        "../scripts/evaluate.py"
