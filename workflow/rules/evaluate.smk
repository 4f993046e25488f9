rule evaluate:
    input:
        dataset=TOKENIZED_DIR,
        record="results/runs/{strategy}/seed{seed}/train.json",
        model="results/runs/{strategy}/seed{seed}/model",
    output:
        record="results/runs/{strategy}/seed{seed}/eval.json",
        predictions="results/runs/{strategy}/seed{seed}/predictions.parquet",
    log:
        "results/logs/evaluate/{strategy}_seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{strategy}_seed{seed}.tsv"
    conda:
        "../envs/train.yaml"
    # All the cores Snakemake may give (it caps threads at --cores): torch's CPU
    # kernels and the tokenizer use them; on a GPU they feed the data.
    threads: 8
    resources:
        gpu=1,
    params:
        # As in finetune: a failed evaluation is retried by a plain rerun.
        retry_marker=evaluate_retry_marker,
        attempt=EVALUATE_ATTEMPT,
    script:
        "../scripts/evaluate.py"
