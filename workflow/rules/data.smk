rule prepare_data:
    output:
        train=f"{DATA_DIR}/train.parquet",
        validation=f"{DATA_DIR}/validation.parquet",
        test=f"{DATA_DIR}/test.parquet",
        summary=report(
            f"{DATA_DIR}/summary.json",
            caption="../report/data.rst",
            category="Data",
        ),
    log:
        f"results/logs/prepare_data/{DATA_KEY}.log",
    conda:
        "../envs/data.yaml"
    params:
        data=DATA_SETTINGS,
    script:
        "../scripts/prepare_data.py"
