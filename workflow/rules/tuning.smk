rule tune:
    input:
        unpack(cell_inputs),
    output:
        record=f"{TRIAL}/train.json",
    log:
        "results/logs/tune/{task}/{model}/{strategy}/{trial}_seed{seed}.log",
    benchmark:
        "results/benchmarks/tune/{task}/{model}/{strategy}/{trial}_seed{seed}.tsv"
    group:
        PLAN.group_of("trial")
    conda:
        "../envs/train.yaml"
    # As finetune (see there); a trial runs tuning.epochs, often fewer.
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=PLAN.runtime_of("trial"),
        slurm_extra="'--signal=TERM@300'",
    params:
        run=trial_settings,
        trial="{trial}",
        retry_marker=retry_marker_of(TRIAL_ATTEMPT),
        checkpoints="results/checkpoints/tuning/{task}/{model}/{strategy}/{trial}/seed{seed}",
        attempt=TRIAL_ATTEMPT,
    script:
        "../scripts/finetune.py"


# A checkpoint: the final runs' settings are known once it has run. They wait for it
# without taking its file as an input, so a new trial that does not win reruns the
# selection and the report, and trains no final run (their settings, a param, are
# unchanged; their evaluations rerun, see docs/tuning-and-statistics.md).
checkpoint select_settings:
    input:
        trials=cell_trial_records,
    output:
        summary="results/tuning/{task}/{model}/summary.csv",
        selected="results/tuning/{task}/{model}/selected.yaml",
    log:
        "results/logs/select_settings/{task}/{model}.log",
    conda:
        "../envs/report.yaml"
    params:
        grid=trial_values,
    script:
        "../scripts/select_settings.py"
