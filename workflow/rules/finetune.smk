rule finetune:
    input:
        dataset="results/tokenized",
        base_model=base_model,
    output:
        record="results/runs/{strategy}/seed{seed}/train.json",
        model=directory("results/runs/{strategy}/seed{seed}/model"),
    log:
        "results/logs/finetune/{strategy}_seed{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{strategy}_seed{seed}.tsv"
    conda:
        "../envs/train.yaml"
    # On a GPU these feed the data, and 4 is plenty: `--cores 16 --resources gpu=4` runs
    # four GPU jobs at once. On a CPU, torch's kernels use them (Snakemake caps threads
    # at --cores).
    threads: 4
    resources:
        gpu=1,
    params:
        run=run_settings,
        retry_marker=finetune_retry_marker,
        # Outside the outputs: Snakemake deletes a failed job's outputs, and a
        # preempted job must find its checkpoints when it is rerun.
        checkpoints="results/checkpoints/{strategy}/seed{seed}",
        # Not an output either, so that it survives the job's own rerun.
        attempt=FINETUNE_ATTEMPT,
    script:
        "../scripts/finetune.py"
