"""The model card of a run's model folder (ftcompare.evaluate.modelcard), from records alone: what
it says, and its loading snippets. That the snippets load a real run, and the copy in
docs/using-a-run.md with them, is tested on a study in test_workflow.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftcompare.evaluate import load_snippet, render_model_card

REPO_ROOT = Path(__file__).resolve().parents[2]

TRAIN = {
    "strategy": "qlora",
    "seed": 1,
    "status": "ok",
    "tokenized_dir": "results/tokenized/abc",
    "config": {
        "method": "qlora",
        "model_name_or_path": "roberta-base",
        "learning_rate": 2e-4,
        "lr_reference_batch_size": 32,
        "batch_size": 32,
        "max_tokens_per_batch": 8192,
        "epochs": 3,
        "max_length": 512,
        "precision": "auto",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"]},
        "quantization": {"quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"},
    },
    "metrics": {"best_epoch": 2, "best_val_accuracy": 0.91, "trainable_params": 1000, "total_params": 125000000},
    "provenance": {"git_commit": "0123abc", "device": "cuda:0", "packages": {"torch": "2.5", "peft": "0.21.0"}},
}
EVAL = {
    "status": "ok",
    "metrics": {
        "accuracy": 0.9312,
        "accuracy_ci_low": 0.9279,
        "accuracy_ci_high": 0.9343,
        "n_test": 25000,
        "macro_f1": 0.93,
        "eval_reviews_per_s": 1500.0,
        "latency_p50_ms": 9.5,
        "latency_p95_ms": 11.0,
        "latency_reviews": 100,
        "merged_eval_reviews_per_s": 2100.0,
        "merged_latency_p50_ms": 6.0,
        "merged_latency_p95_ms": 7.0,
        "merged_agreement": 1.0,
    },
    "provenance": {"device": "NVIDIA H100"},
}
DATA = {
    "settings": {"source": "hub", "name": "stanfordnlp/imdb", "text_column": "text", "label_column": "label"},
    "label_names": ["neg", "pos"],
    "rows": {"train": 22500, "validation": 2500, "test": 25000},
}


def test_the_card_holds_the_strategy_settings_data_metrics_with_ci_and_provenance():
    card = render_model_card(
        train=TRAIN,
        evaluation=EVAL,
        data=DATA,
        folder="results/runs/qlora/seed1/model",
        run_dir="results/runs/qlora/seed1",
    )
    assert card.startswith("---\nlibrary_name: peft\nbase_model: roberta-base\n")
    assert "# `qlora`, seed 1" in card
    assert "4-bit NF4 base): r 8, alpha 16, dropout 0.1, on query, value; base in 4-bit nf4" in card
    assert "From the Hugging Face dataset `stanfordnlp/imdb`, columns `text` and `label`: 22,500 training" in card
    assert "Classes: 0 = neg, 1 = pos" in card
    assert "22,500 training, 2,500 validation" in card and "25,000 test reviews" in card
    assert "93.12% (95% CI 92.79% to 93.43%, Wilson, 25,000 test reviews)" in card
    assert "9.5 / 11.0 ms" in card and "labels 100.00% of test reviews as the adapter does" in card
    assert "git commit `0123abc`" in card and "peft 0.21.0" in card
    assert "ftcompare export results/runs/qlora/seed1 --merged OUT" in card
    snippet = card.split("```python\n")[1].split("```")[0]
    assert "BitsAndBytesConfig(" in snippet and 'bnb_4bit_quant_type="nf4"' in snippet
    compile(snippet, "card", "exec")  # valid Python


def test_a_card_without_data_or_metrics_says_so():
    card = render_model_card(
        train=TRAIN, evaluation=None, data=None, folder="m", run_dir="results/runs/qlora/seed1", merged=True
    )
    assert "The data summary was not found" in card and "No test metrics (no evaluation yet)." in card
    assert "library_name: transformers" in card and "(its 4-bit base dequantised first)" in card
    assert 'pipeline("text-classification", model="m")' in card  # a merged model loads without PEFT


@pytest.mark.parametrize("adapter", [True, False])
def test_snippets_are_valid_python(adapter):
    compile(load_snippet("results/runs/x/seed0/model", adapter=adapter), "snippet", "exec")


def test_the_docs_show_a_lora_cards_snippet():
    page = (REPO_ROOT / "docs" / "using-a-run.md").read_text()
    block = page.split("<!-- snippet: load-adapter -->\n```python\n")[1].split("```")[0]
    assert block.strip() == load_snippet("results/runs/imdb/roberta-base/lora/seed0/model", adapter=True)


@pytest.mark.parametrize("method", ["lora", "qlora", "ia3"])
def test_a_method_on_pefts_default_modules_gets_a_card(method):
    block = "ia3" if method == "ia3" else "lora"
    settings = {"r": 8, "alpha": 16, "dropout": 0.1} if block == "lora" else {}
    config = {**TRAIN["config"], "method": method, block: {**settings, "target_modules": None}}
    card = render_model_card(
        train={**TRAIN, "config": config}, evaluation=EVAL, data=DATA, folder="m", run_dir="results/runs/x/seed1"
    )
    assert "on PEFT's default modules for the architecture" in card
    config[block]["target_modules"] = "query|value"  # PEFT's regular expression
    card = render_model_card(
        train={**TRAIN, "config": config}, evaluation=EVAL, data=DATA, folder="m", run_dir="results/runs/x/seed1"
    )
    assert "on the modules matching 'query|value'" in card


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning", "p_tuning"])
def test_a_virtual_token_methods_card_loads_it_through_ftcompare(method):
    config = {**TRAIN["config"], "method": method, method: {"num_virtual_tokens": 20}}
    config.pop("quantization")
    card = render_model_card(
        train={**TRAIN, "config": config}, evaluation=EVAL, data=DATA, folder="m", run_dir="results/runs/x/seed1"
    )
    snippet = card.split("```python\n")[1].split("```")[0]
    assert 'open_run("results/runs/x/seed1")' in snippet and "AutoPeftModel" not in snippet
    assert "--merged" not in card  # nothing to merge
    compile(snippet, "card", "exec")
