rule prepare_data:
    input:
        unpack(hub_data),
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
    # IMDB's 50k reviews take well under 1 GB in pandas.
    resources:
        mem_mb=4000,
        runtime=minutes(30),
    params:
        data=data_settings,
    script:
        "../scripts/prepare_data.py"
