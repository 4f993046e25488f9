"""Encoders beyond RoBERTa (issue 19): every method either trains on a tiny random BERT,
DeBERTa-v2 and ModernBERT with config/encoders.yaml's module names, or is refused before
any job with a message naming the strategy, its method and the model; the refusals' facts
hold in the models themselves."""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from specs import tokenized_sample

from ftcompare.contract import ConfigError
from ftcompare.data import collate, load_tokenized
from ftcompare.methods import catalogue as methods
from ftcompare.model import add_method, in_head, split_trainable
from ftcompare.plan import REPO_ROOT, Cell, checked_config, load_config, load_yaml, resolve_run

ENCODERS = load_yaml(REPO_ROOT / "config" / "encoders.yaml")["models"]
# The tiny architecture standing in for each encoders.yaml model (roberta-base's is conftest's).
TINY = {"bert": "bert-base-uncased", "deberta-v2": "deberta-v3-base", "modernbert": "ModernBERT-base"}
# Every named method but qlora (LoRA's targets on a 4-bit base: bitsandbytes, tested on RoBERTa).
NAMED = [name for name in methods.METHOD_TABLE if name not in ("peft", "qlora")]
TIMINGS: dict[str, float] = {}


def tiny_config(model_type: str, tokenizer, **overrides):
    """A random 2-3 layer, width-32 model of the architecture, shaped like its hub model
    where the shape decides module names or behaviour (DeBERTa-v3's relative attention,
    ModernBERT's first-layer Identity norm and mean pooling)."""
    from transformers import BertConfig, DebertaV2Config, ModernBertConfig

    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    shape = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
    if model_type == "bert":
        config = BertConfig(num_hidden_layers=2, **shape, **ids)
    elif model_type == "deberta-v2":  # microsoft/deberta-v3-base's settings, smaller buckets
        config = DebertaV2Config(
            num_hidden_layers=2,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=32,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            position_biased_input=False,
            type_vocab_size=0,
            **shape,
            **ids,
        )
    else:  # answerdotai/ModernBERT-base's settings: no biases, mean pooling, 1 global : 2 local layers
        config = ModernBertConfig(
            num_hidden_layers=3,
            local_attention=16,
            classifier_pooling="mean",
            cls_token_id=tokenizer.bos_token_id,
            sep_token_id=tokenizer.eos_token_id,
            **shape,
            **ids,
        )
    for key, value in overrides.items():
        setattr(config, key, value)
    config.num_labels = 2
    return config


def save_tiny(folder: Path, tokenizer_folder: Path, model_type: str, **overrides) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(tiny_config(model_type, tokenizer, **overrides)).save_pretrained(
        str(folder)
    )
    # The tiny RoBERTa's byte-level BPE (1,000 tokens): the module names, not the vocabulary, are under test.
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        if (tokenizer_folder / name).is_file():
            shutil.copy(tokenizer_folder / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory, imdb_sample, tiny_roberta):
    """model_type -> (folder, the base model loaded once); and the sample tokenized once
    (16 training reviews: one step of 16)."""
    from transformers import AutoModelForSequenceClassification

    start = time.perf_counter()
    found = {}
    for model_type in TINY:
        folder = save_tiny(tmp_path_factory.mktemp(model_type), tiny_roberta, model_type)
        found[model_type] = (folder, AutoModelForSequenceClassification.from_pretrained(str(folder)))
    tokenized = tokenized_sample(tmp_path_factory.mktemp("data"), imdb_sample, tiny_roberta, train_size=20, test_size=8)
    TIMINGS["fixtures"] = time.perf_counter() - start
    yield found, tokenized
    print("\ntest_encoders timings (s): " + ", ".join(f"{key} {value:.1f}" for key, value in TIMINGS.items()))


def cell_config(model_type: str, folder: Path, strategies: dict) -> dict:
    """A one-model config as the study makes one per cell from encoders.yaml's model block:
    its model_type, and its method_defaults over config.yaml's (block by block)."""
    block = ENCODERS[TINY[model_type]]
    config = load_config()
    config["model"] = {"name_or_path": str(folder), "model_type": block["model_type"]}
    for name, settings in (block.get("method_defaults") or {}).items():
        config["method_defaults"][name] = {**config["method_defaults"][name], **settings}
    config["data"] = {"source": "hub"}
    config["training"].update({"max_length": 64, "epochs": 1, "batch_size": 16, "checkpoint_every_minutes": None})
    config["strategies"] = strategies
    config["report"]["baseline"] = next(iter(strategies))
    config["tuning"]["enabled"] = False
    config["tuning"]["grid"] = None
    return config


def one_step(model: torch.nn.Module, tokenized: Path) -> None:
    data = load_tokenized(tokenized, splits=("train",))
    split = data.splits["train"]
    batch = collate(split, np.arange(16), pad_token_id=data.pad_token_id, pad_to_multiple_of=8)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1.0e-2)
    model.train()
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
    optimizer.step()


def own_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and not in_head(n)}


@pytest.mark.parametrize("model_type", list(TINY))
def test_every_method_trains_on_each_encoder_or_is_refused_before_any_job(tiny_encoders, model_type):
    (folder, base), tokenized = tiny_encoders[0][model_type], tiny_encoders[1]
    model_config = json.loads((folder / "config.json").read_text())
    start = time.perf_counter()
    trained, refused = [], []
    for method in NAMED:
        config = cell_config(model_type, folder, {method: {}})
        if methods.inapplicable(method, {}, model_type=model_type, model_config=model_config) is not None:
            with pytest.raises(ConfigError) as info:
                checked_config(config, sources=True)  # the local model's config.json (hub ids: below)
            message = str(info.value)
            # The model by its name in the study (a config without `models:`: its folder's name).
            assert f"strategies.{method} (method {method!r}) cannot apply to model {folder.name!r}" in message
            assert f"models.{folder.name}.skip_strategies: [{method}]" in message
            assert f"skip_strategies: [{method}]" in message
            refused.append(method)
            continue
        resolved = checked_config(config, sources=True)  # module names checked against the model
        spec = resolve_run(resolved, strategy=method, seed=0)
        model = add_method(copy.deepcopy(base), spec=spec, total_steps=10)
        own, head = split_trainable(model)
        assert own > 0 and head > 0, method  # more than the head trains
        before = own_weights(model)
        one_step(model, tokenized)
        after = own_weights(model)
        # The method's own weights learn: gradients reached them through the architecture.
        assert any(not torch.equal(before[name], after[name]) for name in before), method
        trained.append(method)
    TIMINGS[model_type] = time.perf_counter() - start
    expected_refusals = {
        "bert": [],
        "deberta-v2": ["prefix_tuning"],
        "modernbert": ["bitfit", "prompt_tuning", "prefix_tuning", "p_tuning"],
    }
    assert refused == expected_refusals[model_type]


def forced(model_type: str, tiny_encoders, method: str, monkeypatch) -> torch.nn.Module:
    """`method` built on the tiny model past its refusal, to show what the refusal prevents."""
    (folder, base), _ = tiny_encoders[model_type], None
    monkeypatch.setattr(methods, "INAPPLICABLE", {})
    spec = resolve_run(checked_config(cell_config(model_type, folder, {method: {}})), strategy=method, seed=0)
    return add_method(copy.deepcopy(base), spec=spec, total_steps=10)


@pytest.mark.parametrize("model_type", ["deberta-v2", "modernbert"])
def test_the_refusals_facts_hold_in_the_models(tiny_encoders, model_type, monkeypatch):
    models, tokenized = tiny_encoders
    # Prefix tuning: the prefix never reaches attention, and PEFT's extended mask breaks the step.
    with pytest.raises(RuntimeError, match="must match the size"):
        one_step(forced(model_type, models, "prefix_tuning", monkeypatch), tokenized)
    if model_type == "modernbert":
        # BitFit on ModernBERT: no bias anywhere, the head alone would train.
        assert split_trainable(forced(model_type, models, "bitfit", monkeypatch))[0] == 0


def test_virtual_tokens_leave_the_text_first_where_each_head_reads(tiny_encoders, tmp_path, tiny_roberta):
    """DeBERTa-v2's backbone reads its encoder's hidden states, not its output, and ModernBERT
    has no encoder module: the virtual positions are dropped at the backbone's output, so
    the head reads the text (a ModernBERT that pools [CLS] takes prompt tuning)."""
    models, _ = tiny_encoders
    cls_folder = save_tiny(tmp_path / "cls", tiny_roberta, "modernbert", classifier_pooling="cls")
    from transformers import AutoModelForSequenceClassification

    cases = {"deberta-v2": models["deberta-v2"], "modernbert": (cls_folder, None)}
    for model_type, (folder, base) in cases.items():
        base = base or AutoModelForSequenceClassification.from_pretrained(str(folder))
        spec = resolve_run(
            checked_config(cell_config(model_type, folder, {"prompt_tuning": {}}), sources=True),
            strategy="prompt_tuning",
            seed=0,
        )
        model = add_method(copy.deepcopy(base), spec=spec, total_steps=10).eval()
        backbone = model.get_base_model().base_model
        seen: list[int] = []
        backbone.register_forward_hook(lambda module, args, output, seen=seen: seen.append(output[0].shape[1]))
        ids = torch.randint(5, 900, (2, 24))
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        assert seen == [24], model_type  # the 20 virtual positions are gone before the head


def test_a_stated_model_type_must_match_the_models_own(tiny_encoders):
    folder = tiny_encoders[0]["bert"][0]
    config = cell_config("bert", folder, {"lora": {}})
    config["model"]["model_type"] = "modernbert"
    with pytest.raises(ConfigError, match="states model_type 'modernbert', its config.json says 'bert'"):
        checked_config(config, sources=True)


def test_encoders_yaml_refuses_before_any_download(monkeypatch):
    # Hub ids, nothing fetched: the stated model_type decides, from the config alone.
    config = load_config()
    block = ENCODERS["deberta-v3-base"]
    config["model"] = {"name_or_path": block["name_or_path"], "model_type": block["model_type"]}
    config["strategies"]["prefix"] = {"method": "prefix_tuning"}
    with pytest.raises(ConfigError) as info:
        checked_config(config)
    message = str(info.value)
    assert "strategies.prefix (method 'prefix_tuning') cannot apply to model 'deberta-v3-base'" in message
    assert "models.deberta-v3-base.skip_strategies: [prefix]" in message
    assert "model_type 'deberta-v2'" in message and "skip_strategies: [prefix]" in message
    # Any PEFT method by config is held to its named method's facts.
    config["strategies"]["prefix"] = {"method": "peft", "peft": {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 4}}
    with pytest.raises(ConfigError, match=r"strategies.prefix \(method 'peft' \(prefix_tuning\)\) cannot apply"):
        checked_config(config)
    # The overlay as a study: every model block's keys the schema's, every cell checked, no download;
    # with every method, the strategies each model cannot run are skipped by its skip_strategies.
    from ftcompare.plan import checked_study

    for overlays in (["encoders.yaml"], ["encoders.yaml", "methods.yaml"]):
        _, cells = checked_study(load_config(*(REPO_ROOT / "config" / name for name in overlays)))
        assert [cell.model for cell in cells] == list(ENCODERS)
    assert "prefix_tuning" not in cells[Cell("imdb", "deberta-v3-base")]["strategies"]
    assert {"bitfit", "prompt_tuning", "p_tuning"}.isdisjoint(cells[Cell("imdb", "ModernBERT-base")]["strategies"])


def test_fetch_model_refuses_another_model_type(tmp_path, monkeypatch, tiny_encoders):
    import huggingface_hub

    from ftcompare.contract import ModelSourceError
    from ftcompare.data import fetch_model

    source = tiny_encoders[0]["modernbert"][0]
    # The hub's copy, as snapshot_download leaves it.
    monkeypatch.setattr(
        huggingface_hub,
        "snapshot_download",
        lambda repo, local_dir, **kw: shutil.copytree(source, local_dir, dirs_exist_ok=True),
    )
    fetch_model("answerdotai/ModernBERT-base", tmp_path / "ok", model_type="modernbert")
    with pytest.raises(ModelSourceError, match="states model_type 'bert', the fetched config.json says 'modernbert'"):
        fetch_model("answerdotai/ModernBERT-base", tmp_path / "bad", model_type="bert")
