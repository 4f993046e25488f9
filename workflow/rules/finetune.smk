rule finetune:
    input:
        dataset=TOKENIZED_DIR,
        selection=after_selection,
    output:
        record="results/runs/{strategy}/seed{seed}/train.json",
        model=directory("results/runs/{strategy}/seed{seed}/model"),
    log:
        "results/logs/finetune/{strategy}_seed{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{strategy}_seed{seed}.tsv"
    conda:
        "../envs/train.yaml"
    # All the cores Snakemake may give (it caps threads at --cores): torch's CPU
    # kernels and the tokenizer use them; on a GPU they feed the data.
    threads: 8
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
