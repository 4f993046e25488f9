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
    log:
        "results/logs/prepare_data.log",
    conda:
        "../envs/data.yaml"
    params:
        data=data_settings,
    script:
        "../scripts/prepare_data.py"
