# Downloads from the Hugging Face Hub, run where Snakemake runs (a cluster's login node
# has network; its GPU nodes often have none). Every other job reads these local copies
# with the hub switched off. Only a hub model or a hub dataset is fetched.


localrules:
    fetch_model,
    fetch_data,


rule fetch_model:
    output:
        model=directory(FETCHED_MODEL),
    log:
        "results/logs/fetch_model.log",
    conda:
        "../envs/train.yaml"
    params:
        model=VALIDATED["model"]["name_or_path"],
        # As the config states it (or None): the fetched config.json must agree.
        model_type=VALIDATED["model"].get("model_type"),
    script:
        "../scripts/fetch_model.py"


rule fetch_data:
    output:
        train=FETCHED_DATA["train"],
        test=FETCHED_DATA["test"],
    log:
        "results/logs/fetch_data.log",
    conda:
        "../envs/data.yaml"
    params:
        name=VALIDATED["data"]["name"],
    script:
        "../scripts/fetch_data.py"
