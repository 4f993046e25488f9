rule tokenize:
    input:
        train="results/data/train.parquet",
        validation="results/data/validation.parquet",
        test="results/data/test.parquet",
        base_model=base_model,
    output:
        dataset=directory("results/tokenized"),
    log:
        "results/logs/tokenize.log",
    benchmark:
        "results/benchmarks/tokenize.tsv"
    conda:
        "../envs/train.yaml"
    # All the cores Snakemake may give (it caps threads at --cores): torch's CPU
    # kernels and the tokenizer use them; on a GPU they feed the data.
    threads: 8
    resources:
        mem_mb=4000,
        runtime=minutes(30),
    params:
        model=VALIDATED["model"]["name_or_path"],
        max_length=VALIDATED["training"]["max_length"],
    script:
        "../scripts/tokenize.py"
