rule prepare_data:
    output:
        train="results/data/train.parquet",
        validation="results/data/validation.parquet",
        test="results/data/test.parquet",
        summary=report(
            "results/data/summary.json",
            caption="../report/data.rst",
            category="Data",
        ),
    params:
        data=data_settings,
    log:
        "results/logs/prepare_data.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/prepare_data.py"
