rule prepare_data:
    input:
        # The fetched copy of a hub dataset; nothing for local files.
        hub=lambda wildcards: PLAN.data[wildcards.data_key]["hub"] or [],
    output:
        train="results/data/{data_key}/train.parquet",
        validation="results/data/{data_key}/validation.parquet",
        test="results/data/{data_key}/test.parquet",
        summary=report(
            "results/data/{data_key}/summary.json",
            caption="../report/data.rst",
            category="data",
            subcategory="data",
            labels={"strategy": "-", "seed": "-", "item": "data summary"},
        ),
    log:
        "results/logs/prepare_data/{data_key}.log",
    conda:
        "../envs/data.yaml"
    # IMDB's 50k reviews take well under 1 GB in pandas.
    resources:
        mem_mb=4000,
        runtime=minutes(30),
    params:
        data=lambda wildcards: PLAN.data[wildcards.data_key]["settings"],
    script:
        "../scripts/prepare_data.py"
