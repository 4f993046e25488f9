rule tokenize:
    input:
        train=f"{DATA_DIR}/train.parquet",
        validation=f"{DATA_DIR}/validation.parquet",
        test=f"{DATA_DIR}/test.parquet",
        base_model=base_model,
    output:
        dataset=directory(TOKENIZED_DIR),
    log:
        f"results/logs/tokenize/{TOKENIZED_KEY}.log",
    benchmark:
        f"results/benchmarks/tokenize/{TOKENIZED_KEY}.tsv"
    conda:
        "../envs/train.yaml"
    # All the cores Snakemake may give (it caps threads at --cores): torch's CPU
    # kernels and the tokenizer use them; on a GPU they feed the data.
    threads: 8
    resources:
        mem_mb=4000,
        runtime=minutes(30),
    params:
        model=TOKENIZE_SETTINGS["model"],
        max_length=TOKENIZE_SETTINGS["max_length"],
    script:
        "../scripts/tokenize.py"
