rule tokenize:
    input:
        unpack(lambda wildcards: PLAN.tokenize_splits(wildcards.tokenized_key)),
        base_model=lambda wildcards: PLAN.tokenized[wildcards.tokenized_key][
            "base_model"
        ]
        or [],
    output:
        dataset=directory("results/tokenized/{tokenized_key}"),
    log:
        "results/logs/tokenize/{tokenized_key}.log",
    benchmark:
        "results/benchmarks/tokenize/{tokenized_key}.tsv"
    conda:
        "../envs/train.yaml"
    # All the cores Snakemake may give (it caps threads at --cores): torch's CPU
    # kernels and the tokenizer use them; on a GPU they feed the data.
    threads: 8
    resources:
        mem_mb=4000,
        runtime=minutes(30),
    params:
        model=lambda wildcards: PLAN.tokenized[wildcards.tokenized_key]["model"],
        max_length=lambda wildcards: PLAN.tokenized[wildcards.tokenized_key][
            "max_length"
        ],
    script:
        "../scripts/tokenize.py"
