rule finetune:
    input:
        # The cell's tokenized data and fetched model; a tuned strategy waits for its selection.
        unpack(run_inputs),
    output:
        record=report(
            f"{RUN}/train.json",
            caption="../report/train_record.rst",
            category="{task}",
            subcategory="{model}",
            labels={
                "strategy": "{strategy}",
                "seed": "{seed}",
                "item": "training record",
            },
        ),
        model=directory(f"{RUN}/model"),
    log:
        "results/logs/finetune/{task}/{model}/{strategy}_seed{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{task}/{model}/{strategy}_seed{seed}.tsv"
    # Host memory: the CUDA context and libraries (~3 GB), the model loaded on the host
    # first, and checkpoints, which copy the trainable weights and Adam's state there
    # (1.5 GB for roberta-base). Runtime: the run's estimate times cost.safety_factor
    # (ftcompare.plan.cost), growing with each retry. On SLURM (ignored elsewhere): SIGTERM to
    # the job's steps 5 minutes before its time limit, so that training checkpoints and
    # exits non-zero and the retry resumes; a short run joins a group there.
    group:
        PLAN.group_of("finetune")
    conda:
        "../envs/train.yaml"
    # On a GPU these feed the data, and 4 is plenty: `--cores 16 --resources gpu=4` runs
    # four GPU jobs at once. On a CPU, torch's kernels use them (Snakemake caps threads
    # at --cores).
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=PLAN.runtime_of("finetune"),
        slurm_extra="'--signal=TERM@300'",
    params:
        run=run_settings,
        retry_marker=retry_marker_of(FINETUNE_ATTEMPT),
        # Outside the outputs: Snakemake deletes a failed job's outputs, and a
        # preempted job must find its checkpoints when it is rerun.
        checkpoints="results/checkpoints/{task}/{model}/{strategy}/seed{seed}",
        # Not an output either, so that it survives the job's own rerun.
        attempt=FINETUNE_ATTEMPT,
    script:
        "../scripts/finetune.py"
