"""The model card (README.md) of a trained run's model folder, and the code that loads it.

Written by the evaluate job, which has everything a card needs: the run's settings and
provenance (train.json), its test metrics with their interval (eval.json) and the data it
learnt from (the data summary). `ftcompare export --merged` writes one for the merged
model. The loading snippet is generated here, once; docs/using-a-run.md shows the one for
a LoRA run, and the tests run both.

Torch-free: strings and records only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftcompare.contract import atomic_write_bytes, is_hub_id
from ftcompare.methods import WHOLE_MODEL_METHODS, virtual_tokens

METHOD_NAMES = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (LoRA on a 4-bit NF4 base)", "ia3": "IA3"}
# What the snippets classify: any text would do; two reviews show both classes. Written
# with json.dumps: double quotes, as ruff formats the docs' copy of a snippet.
EXAMPLE_REVIEWS = ["A moving, beautifully acted film.", "Dull, and far too long."]
# A sentence-pair run's snippet classifies pairs: each first text with its second.
EXAMPLE_PAIRS = (
    ["The film was moving and beautifully acted.", "The company's shares fell sharply on Monday."],
    ["It was a moving, well-acted film.", "The weather was sunny all week."],
)


def load_snippet(
    folder: str,
    *,
    adapter: bool,
    quantization: Mapping[str, Any] | None = None,
    virtual_tokens: bool = False,
    run_dir: str | None = None,
    pair: bool = False,
) -> str:
    """Python that loads the model in `folder` with plain transformers (a whole model) or
    PEFT (an adapter on its base: AutoPeftModelForSequenceClassification, with the
    trained head) and prints each example review's class and probabilities.

    `quantization`: a QLoRA run's settings, to rebuild its 4-bit base as it was trained.
    `virtual_tokens`: a prompt-learning run (of `run_dir`), which loads through ftcompare.
    `pair`: a sentence-pair run, whose snippet classifies pairs (the tokenizer's pair encoding)."""
    if virtual_tokens:
        return _ftcompare_snippet(run_dir or str(Path(folder).parent), pair=pair)
    if not adapter:
        return _pipeline_snippet(folder, pair=pair)
    return _peft_snippet(folder, quantization=quantization, pair=pair)


def _pipeline_snippet(folder: str, *, pair: bool) -> str:
    """A whole model: transformers' pipeline loads it as it is."""
    inputs = (
        json.dumps([{"text": a, "text_pair": b} for a, b in zip(*EXAMPLE_PAIRS)])
        if pair
        else json.dumps(EXAMPLE_REVIEWS)
    )
    return "\n".join(
        [
            "from transformers import pipeline",
            "",
            f'classify = pipeline("text-classification", model="{folder}")',
            "# truncation: at the run's max_length, as in training; top_k=None: every class's probability",
            *(["# Each input a pair: text and text_pair, encoded together as in training"] if pair else []),
            f"print(classify({inputs}, truncation=True, top_k=None))",
        ]
    )


def _peft_snippet(folder: str, *, quantization: Mapping[str, Any] | None, pair: bool) -> str:
    """An adapter on its base (QLoRA's rebuilt in 4 bits as trained), with the trained head."""
    lines = [
        "import torch",
        "from peft import AutoPeftModelForSequenceClassification",
        "from transformers import AutoConfig, AutoTokenizer" + (", BitsAndBytesConfig" if quantization else ""),
        "",
        f'folder = "{folder}"',
        "labels = AutoConfig.from_pretrained(folder)  # id2label and label2id: the run's classes",
        "tokenizer = AutoTokenizer.from_pretrained(folder)  # truncates at the run's max_length",
        *(_quantization_lines(quantization) if quantization else []),
        "model = AutoPeftModelForSequenceClassification.from_pretrained(",
        "    folder, id2label=labels.id2label, label2id=labels.label2id"
        + (', quantization_config=quantization, device_map="auto"' if quantization else ""),
        ").eval()",
    ]
    if pair:
        lines += [
            f"reviews = {json.dumps(EXAMPLE_PAIRS[0])}",
            f"second = {json.dumps(EXAMPLE_PAIRS[1])}  # each text's second text: a sentence pair",
            "# The tokenizer's pair encoding, the longer text cut first, as in training",
            'batch = tokenizer(reviews, second, truncation="longest_first", padding=True, return_tensors="pt")',
            "batch = batch.to(model.device)",
        ]
    else:
        lines += [
            f"reviews = {json.dumps(EXAMPLE_REVIEWS)}",
            'batch = tokenizer(reviews, truncation=True, padding=True, return_tensors="pt").to(model.device)',
        ]
    lines += [
        "with torch.inference_mode():",
        "    probabilities = model(**batch).logits.softmax(dim=-1)",
        "for review, p in zip(reviews, probabilities.tolist()):",
        "    print(model.config.id2label[p.index(max(p))], p, review)",
    ]
    return "\n".join(lines)


def _quantization_lines(quantization: Mapping[str, Any]) -> list[str]:
    return [
        "# The 4-bit base, quantised as in training (bitsandbytes); the head stays out of it.",
        "quantization = BitsAndBytesConfig(",
        "    load_in_4bit=True,",
        f'    bnb_4bit_quant_type="{quantization["quant_type"]}",',
        f"    bnb_4bit_use_double_quant={bool(quantization['double_quant'])},",
        f"    bnb_4bit_compute_dtype=torch.{quantization['compute_dtype']} if torch.cuda.is_available() "
        "else torch.float32,",
        '    llm_int8_skip_modules=["classifier"],',
        ")",
    ]


def _ftcompare_snippet(run_dir: str, *, pair: bool = False) -> str:
    """Prompt, prefix and P-tuning runs: their head reads the text's <s>/[CLS] behind the
    virtual tokens, prefix tuning passes its keys and values in a way transformers 5's
    encoders take only through ftcompare's forward, and the text is cut to leave the
    virtual tokens room (model.build.text_length). Plain transformers + PEFT does none of it
    (it reads a virtual token, or fails), so the run is loaded as the study evaluated it."""
    return "\n".join(
        [
            "from ftcompare.use import open_run, predict",
            "",
            "# Rebuilt as trained: the head reads <s>/[CLS], not a virtual token, and the text is cut to leave the",
            "# virtual tokens their positions. Plain transformers + PEFT does neither: load such a run this way.",
            f'run = open_run("{run_dir}")',
            *(
                [
                    f"reviews = {json.dumps(EXAMPLE_PAIRS[0])}",
                    f"second = {json.dumps(EXAMPLE_PAIRS[1])}  # each text's second text: a sentence pair",
                    "predictions = predict(run, reviews, pairs=second)  # per pair: prediction, prob_<class>",
                ]
                if pair
                else [
                    f"reviews = {json.dumps(EXAMPLE_REVIEWS)}",
                    "predictions = predict(run, reviews)  # per review: prediction, prob_<class>",
                ]
            ),
            'probabilities = predictions.filter(like="prob_").to_numpy().tolist()',
            'for review, label, p in zip(reviews, predictions["prediction"], probabilities):',
            "    print(label, p, review)",
        ]
    )


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _num(value: Any, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _table(rows: list[tuple[str, Any]]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)])


def _modules(targets: Any) -> str:
    """A target_modules setting in words: a list, PEFT's regular expression, or null."""
    if targets is None:
        return "PEFT's default modules for the architecture"
    if isinstance(targets, str):
        return f"the modules matching {targets!r}"
    return ", ".join(map(str, targets))


def _method(config: Mapping[str, Any]) -> str:
    method = config.get("method", "?")
    name = METHOD_NAMES.get(method, method)
    if method in ("lora", "qlora") and config.get("lora"):
        lora = config["lora"]
        name += (
            f": r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']}, "
            f"on {_modules(lora.get('target_modules'))}"
        )
    elif method == "ia3" and config.get("ia3"):
        name += f": on {_modules(config['ia3'].get('target_modules'))}"
    if method == "qlora" and config.get("quantization"):
        q = config["quantization"]
        name += f"; base in 4-bit {q['quant_type']}, double quantisation {'on' if q['double_quant'] else 'off'}"
    return name + ("; the classification head trains whole" if method != "full" else "")


def _strategy_section(train: Mapping[str, Any]) -> str:
    config, metrics = train.get("config") or {}, train.get("metrics") or {}
    budget = config.get("max_tokens_per_batch")
    rows = [
        ("Strategy", f"`{train.get('strategy')}`, seed {train.get('seed')}"),
        ("Method", _method(config)),
        (
            "Learning rate",
            f"{config.get('learning_rate'):g} at {config.get('lr_reference_batch_size')} reviews per step; "
            f"applied: {_num(metrics.get('effective_learning_rate'), 6)} at "
            f"{_num(metrics.get('mean_reviews_per_step'), 1)} reviews per step",
        ),
        (
            "Batches",
            f"at most {config.get('batch_size')} reviews" + (f" and {budget:,} padded tokens" if budget else ""),
        ),
        ("Epochs", f"{config.get('epochs')}; the best on validation kept: epoch {metrics.get('best_epoch')}"),
        ("Validation accuracy (best epoch)", _pct(metrics.get("best_val_accuracy"))),
        ("Max length", f"{config.get('max_length')} tokens (longer reviews truncated)"),
        ("Precision", metrics.get("precision", config.get("precision"))),
        (
            "Trainable parameters",
            f"{_num(metrics.get('trainable_params'))} of {_num(metrics.get('total_params'))} "
            f"({_num(metrics.get('trainable_pct'), 2)}%)",
        ),
        ("Training time", f"{_num(metrics.get('train_time_s'), 1)} s"),
    ]
    return _table(rows) + "\n\nEvery setting is in the run's `train.json` (`config`)."


def _data_section(data: Mapping[str, Any] | None, label_names: list[str] | None) -> str:
    if data is None:
        return "The data summary was not found; the run's `train.json` names the tokenized data it used."
    settings = data.get("settings") or {}
    source = settings.get("source")
    if source == "hub":
        where = f"the Hugging Face dataset `{settings.get('name')}`" + (
            f" (configuration `{settings['config']}`)" if settings.get("config") else ""
        )
    elif source == "aclimdb":
        where = f"the aclImdb folder `{settings.get('train')}`"
    elif source is not None:
        where = f"{source} files `{settings.get('train')}` (train) and `{settings.get('test')}` (test)"
    else:  # a summary written without its settings: the data's numbers are still known
        where = "the prepared data (its settings were not recorded)"
    if source is not None and settings.get("text_pair_column"):
        where += (
            f", sentence pairs of columns `{settings.get('text_column')}` and `{settings.get('text_pair_column')}`, "
            f"labels `{settings.get('label_column')}`"
        )
    elif source is not None:
        where += f", columns `{settings.get('text_column')}` and `{settings.get('label_column')}`"
    seed = f", seed {settings['split_seed']}" if settings.get("split_seed") is not None else ""
    rows = data.get("rows") or {}
    names = label_names or data.get("label_names")
    classes = (
        ", ".join(f"{k} = {name}" for k, name in enumerate(names))
        if names
        else f"{data.get('num_labels')} classes, named by their numbers"
    )
    return (
        f"From {where}: {_num(rows.get('train'))} training, {_num(rows.get('validation'))} validation ("
        + (
            "the data's own validation split"
            if settings.get("validation_split") or settings.get("validation")
            else f"carved from train, stratified{seed}"
        )
        + f") and {_num(rows.get('test'))} test reviews. Classes: {classes}. The "
        "validation split chose the epoch; the test split was used for the numbers below only."
    )


def _metrics_section(evaluation: Mapping[str, Any] | None) -> str:
    if evaluation is None or evaluation.get("status") != "ok":
        reason = (
            "no evaluation yet" if evaluation is None else f"{evaluation.get('status')}: {evaluation.get('reason')}"
        )
        return f"No test metrics ({reason})."
    m = evaluation.get("metrics") or {}
    device = (evaluation.get("provenance") or {}).get("device", "an unknown device")
    rows = [
        (
            "Accuracy",
            f"{_pct(m.get('accuracy'))} (95% CI {_pct(m.get('accuracy_ci_low'))} to {_pct(m.get('accuracy_ci_high'))}, "
            f"Wilson, {_num(m.get('n_test'))} test reviews)",
        ),
        ("Macro F1 / precision / recall", " / ".join(_pct(m.get(key)) for key in ("macro_f1", "precision", "recall"))),
        ("MCC", _num(m.get("mcc"), 3)),
        ("Test reviews/s (batched)", _num(m.get("eval_reviews_per_s"))),
        (
            "One review, p50 / p95",
            f"{_num(m.get('latency_p50_ms'), 1)} / {_num(m.get('latency_p95_ms'), 1)} ms "
            f"(over {m.get('latency_reviews')} test reviews)",
        ),
    ]
    if m.get("merged_eval_reviews_per_s") is not None:
        rows.append(
            (
                "Merged into the base",
                f"{_num(m['merged_eval_reviews_per_s'])} test reviews/s; one review "
                f"{_num(m.get('merged_latency_p50_ms'), 1)} / {_num(m.get('merged_latency_p95_ms'), 1)} ms; "
                f"labels {_pct(m.get('merged_agreement'))} of test reviews as the adapter does",
            )
        )
    return _table(rows) + f"\n\nMeasured on {device}; the numbers are the run's `eval.json`."


def _provenance_section(train: Mapping[str, Any], run_dir: str) -> str:
    p = train.get("provenance") or {}
    packages = p.get("packages") or {}
    versions = ", ".join(
        f"{name} {packages[name]}" for name in ("torch", "transformers", "peft", "bitsandbytes") if packages.get(name)
    )
    where = p.get("device", "?") + (f" (SLURM job {p['slurm_job_id']})" if p.get("slurm_job_id") else "")
    return "\n".join(
        [
            f"- Base model: `{(train.get('config') or {}).get('model_name_or_path')}`",
            f"- Trained {p.get('started_at', '?')} to {p.get('finished_at', '?')} on {where}, {p.get('hostname', '?')}",
            f"- Code: ftcompare at git commit `{p.get('git_commit') or 'unknown'}`; {versions}",
            f"- Tokenized data: `{train.get('tokenized_dir')}`",
            f"- Records: `{run_dir}/train.json` (settings, curves, provenance), `{run_dir}/eval.json` (test metrics), "
            f"`{run_dir}/predictions.parquet` (every test review's prediction)",
        ]
    )


def render_model_card(
    *,
    train: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None,
    folder: str,
    run_dir: str,
    merged: bool = False,
) -> str:
    """The card of the model in `folder` (as a user reaches it, e.g. results/runs/imdb/roberta-base/lora/seed0/model):
    the run's strategy and settings, data, test metrics with their interval, how to load it
    and where it comes from. `merged`: the folder holds the run's adapter merged into its base."""
    config = train.get("config") or {}
    method = config.get("method", train.get("method"))
    base = config.get("model_name_or_path", "")
    adapter = method not in WHOLE_MODEL_METHODS and not merged
    prompt = adapter and _adds_virtual_tokens(method, config)  # no weights to merge; loads through ftcompare
    label_names = (data or {}).get("label_names")
    front = ["---", f"library_name: {'peft' if adapter else 'transformers'}"]
    if is_hub_id(base):
        front.append(f"base_model: {base}")
    front += ["pipeline_tag: text-classification", f"tags: [ftcompare, {method}]", "---"]
    if merged:
        what = (
            f"The {METHOD_NAMES.get(method, method)} adapter of run `{run_dir}` merged into `{Path(base).name or base}`"
        )
        what += " (its 4-bit base dequantised first)" if method == "qlora" else ""
        what += ": a plain transformers model, with the trained classification head, that needs no PEFT."
    elif adapter:
        what = f"A {METHOD_NAMES.get(method, method)} adapter and trained classification head for `{base}`."
    elif method == "bitfit":
        what = f"`{base}` with its biases and classification head trained (BitFit), saved whole."
    else:
        what = f"`{base}` fine-tuned whole (every weight trained)."
    columns = train.get("text_columns") or {}
    predict_input = (
        f"pairs.csv` (columns `{columns['text']}` and `{columns['text_pair']}`)"
        if columns.get("text_pair")
        else "reviews.txt`"
    )
    usage = (
        f"`ftcompare predict {run_dir} --input {predict_input} labels new text the way the study evaluated it"
        + (
            f"; `ftcompare export {run_dir} --merged OUT` writes the adapter merged into its base, which "
            '`transformers.pipeline("text-classification", model=OUT)` loads without PEFT'
            if adapter and not prompt
            else ""
        )
        + "."
    )
    snippet = load_snippet(
        folder,
        adapter=adapter,
        quantization=config.get("quantization") if adapter else None,
        virtual_tokens=prompt,
        run_dir=run_dir,
        pair=bool((train.get("text_columns") or {}).get("text_pair")),
    )
    sections = [
        "\n".join(front),
        f"# `{train.get('strategy')}`, seed {train.get('seed')}: text classification",
        what + " Trained by the ftcompare workflow.",
        "## Strategy and settings",
        _strategy_section(train),
        "## Data",
        _data_section(data, label_names),
        "## Test metrics",
        _metrics_section(evaluation),
        "## How to load",
        f"```python\n{snippet}\n```",
        usage,
        "## Provenance",
        _provenance_section(train, run_dir),
    ]
    return "\n\n".join(sections) + "\n"


def _adds_virtual_tokens(method: str, config: Mapping[str, Any]) -> bool:
    try:
        return virtual_tokens(method, config) > 0
    except (KeyError, TypeError):  # a method this version does not know, or a record without its block
        return False


def write_model_card(path: Path, **card: Any) -> None:
    atomic_write_bytes(Path(path), render_model_card(**card).encode())


def write_unfinished_card(path: Path, *, train: Mapping[str, Any], status: str, reason: str | None) -> None:
    """The card of a run that did not finish ok: what it was, and why it has no model to use."""
    text = (
        f"# `{train.get('strategy')}`, seed {train.get('seed')}: no model\n\n"
        f"This run ended {status}: {reason or 'no reason recorded'}. Its records (train.json, eval.json) say more; "
        "a plain rerun of the workflow retries it.\n"
    )
    atomic_write_bytes(Path(path), text.encode())
