# Downloads from the Hugging Face Hub, run where Snakemake runs (a cluster's login node
# has network; its GPU nodes often have none). Every other job reads these local copies
# with the hub switched off. Only a hub model or a hub dataset is fetched.


localrules:
    fetch_model,
    fetch_data,


rule fetch_model:
    output:
        model=directory("results/sources/models/{hub}"),
    log:
        "results/logs/fetch_model/{hub}.log",
    conda:
        "../envs/train.yaml"
    params:
        model=lambda wildcards: PLAN.hub_models[wildcards.hub]["name_or_path"],
        # As the config states it (or None): the fetched config.json must agree.
        model_type=lambda wildcards: PLAN.hub_models[wildcards.hub].get("model_type"),
    script:
        "../scripts/fetch_model.py"


rule fetch_data:
    output:
        # A Parquet file per split it reads (train, test, and validation where the data has one).
        data=directory("results/sources/data/{hub}"),
    log:
        "results/logs/fetch_data/{hub}.log",
    conda:
        "../envs/data.yaml"
    params:
        name=lambda wildcards: PLAN.hub_data[wildcards.hub]["name"],
        config=lambda wildcards: PLAN.hub_data[wildcards.hub]["config"],
        splits=lambda wildcards: PLAN.hub_data[wildcards.hub]["splits"],
    script:
        "../scripts/fetch_data.py"
