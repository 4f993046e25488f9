rule prepare_data:
    input:
        unpack(hub_data),
    output:
        train=f"{DATA_DIR}/train.parquet",
        validation=f"{DATA_DIR}/validation.parquet",
        test=f"{DATA_DIR}/test.parquet",
        summary=report(
            f"{DATA_DIR}/summary.json",
            caption="../report/data.rst",
            category=REPORT_TASK,
            subcategory="data",
            labels={"strategy": "-", "seed": "-", "item": "data summary"},
        ),
    log:
        f"results/logs/prepare_data/{DATA_KEY}.log",
    conda:
        "../envs/data.yaml"
    # IMDB's 50k reviews take well under 1 GB in pandas.
    resources:
        mem_mb=4000,
        runtime=minutes(30),
    params:
        data=DATA_SETTINGS,
    script:
        "../scripts/prepare_data.py"
