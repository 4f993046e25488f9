"""Every named method, and any PEFT method by config: trained, saved, reloaded; their
parameter counts against the papers' formulas; where they differ from LoRA."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from specs import CPU, make_spec, tokenized_sample

from ftcompare.contract import ConfigError
from ftcompare.data import collate, load_tokenized
from ftcompare.methods import METHOD_TABLE
from ftcompare.model import (
    add_method,
    build_model,
    count_parameters,
    load_trained,
    peft_config,
    resolve_precision,
    split_trainable,
)
from ftcompare.plan import checked_config, load_config, resolve_run
from ftcompare.train import loop as training
from ftcompare.train import train_run

# Every method the config names, as its own strategy; `peft` is tested by config below.
NAMED = [name for name in METHOD_TABLE if name != "peft"]


def small_tokenized(folder: Path, imdb_sample: Path, model_path: Path) -> Path:
    """32 training, 8 validation and 16 test reviews at 64 tokens: two steps of 16."""
    return tokenized_sample(folder, imdb_sample, model_path, train_size=40, test_size=16)


@pytest.fixture(scope="module")
def models_and_data(tmp_path_factory, imdb_sample, tiny_roberta, tiny_bert):
    """Two architectures' heads and module names: RoBERTa's two-layer classifier, BERT's
    pooler and one-layer classifier (as MiniLM's)."""
    return {
        model: (path, small_tokenized(tmp_path_factory.mktemp(model), imdb_sample, path))
        for model, path in (("tiny-roberta", tiny_roberta), ("tiny-bert", tiny_bert))
    }


def probe_logits(model: torch.nn.Module, tokenized: Path) -> torch.Tensor:
    data = load_tokenized(tokenized, splits=("validation",))
    split = data.splits["validation"]
    batch = collate(split, np.arange(len(split)), pad_token_id=data.pad_token_id, pad_to_multiple_of=8)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model.train(was_training)
    return logits


def train_save_reload(spec, tokenized: Path, tmp_path: Path, monkeypatch) -> tuple:
    """Train through `train_run`; returns (result, logits of the trained model as saved,
    logits of the model loaded back from disk)."""
    seen = {}
    real_save = training.save_trained

    def save_and_probe(model, **kwargs):
        seen["logits"] = probe_logits(model, tokenized)
        return real_save(model, **kwargs)

    monkeypatch.setattr(training, "save_trained", save_and_probe)
    result = train_run(
        spec=spec,
        tokenized_dir=tokenized,
        model_out_dir=tmp_path / "model",
        checkpoint_dir=tmp_path / "ckpt",
        device=CPU,
    )
    assert result.status == "ok", result.reason
    precision = resolve_precision(requested=spec.precision, method=spec.method, device=CPU)
    loaded = load_trained(spec=spec, model_dir=tmp_path / "model", num_labels=2, device=CPU, precision=precision)
    return result, seen["logits"], probe_logits(loaded, tokenized)


@pytest.mark.parametrize("model", ["tiny-roberta", "tiny-bert"])
@pytest.mark.parametrize("method", NAMED)
def test_every_method_trains_saves_and_reloads_to_the_same_logits(
    models_and_data, model, method, tmp_path, monkeypatch
):
    model_path, tokenized = models_and_data[model]
    spec = make_spec(model_path, method, {"learning_rate": 1.0e-3})
    result, trained, reloaded = train_save_reload(spec, tokenized, tmp_path, monkeypatch)
    assert result.metrics["optimizer_steps"] == 2
    torch.testing.assert_close(reloaded, trained, rtol=1e-5, atol=1e-5)
    metrics = result.metrics
    assert metrics["method_params"] + metrics["head_params"] == metrics["trainable_params"] > 0
    assert metrics["adapter_size_mb"] > 0 and metrics["text_max_length"] == 64
    if method != "full":
        # Everything but full fine-tuning saves a fraction of the model.
        assert metrics["adapter_size_mb"] < 0.5 * 4 * metrics["total_params"] / 1e6


def test_a_4bit_dora_base_trains_and_reloads(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    spec = make_spec(tiny_roberta, "qdora", {"method": "dora", "learning_rate": 1.0e-3, "quantization": {}})
    result, trained, reloaded = train_save_reload(spec, tiny_tokenized, tmp_path, monkeypatch)
    torch.testing.assert_close(reloaded, trained, rtol=1e-5, atol=1e-5)
    assert result.metrics["method_params"] == 2 * 2 * (8 * 32 + 32 * 8 + 32)  # LoRA's A, B plus DoRA's magnitude


# --------------------------------------------------------------------------- any PEFT method


def test_any_peft_method_by_config_trains_and_reloads(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    # BOFT is not a named method: its config's keywords go to PEFT as they are.
    entry = {
        "method": "peft",
        "learning_rate": 1.0e-3,
        "peft": {"peft_type": "boft", "boft_block_size": 4, "target_modules": ["query", "value"]},
    }
    spec = make_spec(tiny_roberta, "boft", entry, epochs=1)
    assert spec.block("peft") == {**entry["peft"], "peft_type": "BOFT"}
    _, trained, reloaded = train_save_reload(spec, tiny_tokenized, tmp_path, monkeypatch)
    torch.testing.assert_close(reloaded, trained, rtol=1e-5, atol=1e-5)


def test_the_lora_block_takes_peft_lora_switches(tiny_roberta):
    spec = make_spec(tiny_roberta, "lora_b", {"method": "lora", "lora": {"bias": "lora_only", "use_rslora": True}})
    config = peft_config(spec)
    assert (config.bias, config.use_rslora, config.use_dora) == ("lora_only", True, False)
    precision = resolve_precision(requested="auto", method="lora", device=CPU)
    model = build_model(spec=spec, num_labels=2, device=CPU, precision=precision)
    # lora_only: the biases of the adapted layers train too (2 layers x query, value x 32).
    assert split_trainable(model)[0] == 2 * 2 * (8 * 32 + 32 * 8 + 32)


@pytest.mark.parametrize(
    ("peft", "message"),
    [
        (
            {"peft_type": "LOHA", "rank": 8},
            "strategies.x.peft: ['rank'] is not a setting of LoHaConfig (strategy 'x', method 'peft', peft_type 'LOHA'",
        ),
        ({"peft_type": "LOHA", "r": 8, "lora_alpha": 16}, "['lora_alpha'] is not a setting of LoHaConfig"),
        ({"peft_type": "not_a_method"}, "strategies.x.peft.peft_type = 'not_a_method' is not a method of PEFT"),
        (
            {"peft_type": "LORA", "task_type": "CAUSAL_LM"},
            "strategies.x.peft.task_type = 'CAUSAL_LM': set by the workflow",
        ),
        ({"peft_type": "PROMPT_TUNING"}, "strategies.x.peft.num_virtual_tokens: PROMPT_TUNING needs it"),
        ({"peft_type": "ADALORA", "init_r": 4, "use_dora": True}, "AdaLoraConfig rejects these settings"),
    ],
)
def test_a_bad_peft_block_is_a_config_error_naming_the_method_and_the_key(peft, message):
    config = load_config()
    config["strategies"]["x"] = {"method": "peft", "peft": peft}
    with pytest.raises(ConfigError) as info:
        checked_config(config)
    assert message in str(info.value)


def test_a_peft_block_can_be_tuned_by_its_own_keys():
    from ftcompare.plan import trials

    config = load_config()
    config["strategies"]["x"] = {"method": "peft", "peft": {"peft_type": "LOHA", "r": 4}}
    config["tuning"]["grid"] = {"x": {"peft.r": [2, 4]}}
    resolved = checked_config(config)
    assert [t.id for t in trials(resolved)["x"]] == ["peft.r=2", "peft.r=4"]
    config["tuning"]["grid"] = {"x": {"peft.rank": [2]}}
    with pytest.raises(ConfigError, match=r"trial peft\.rank=2: strategies\.x\.peft: \['rank'\] is not a setting"):
        checked_config(config)


# ------------------------------------------------------------------ settings PEFT would refuse or change


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"method": "ia3", "ia3": {"target_modules": ["key", "value"], "feedforward_modules": ["output.dense"]}},
            "strategies.x.ia3.feedforward_modules ['output.dense'] is not among its target_modules ['key', 'value']",
        ),
        (
            {"method": "adalora", "adalora": {"initial_phase": 0.7, "final_phase": 0.5}},
            "strategies.x.adalora.initial_phase = 0.7 and strategies.x.adalora.final_phase = 0.5 leave no steps",
        ),
        (
            {"method": "adalora", "adalora": {"init_r": 4, "target_r": 8}},
            "strategies.x.adalora.target_r = 8 is above strategies.x.adalora.init_r = 4",
        ),
    ],
    ids=["ia3-feedforward-not-targeted", "adalora-phases", "adalora-ranks"],
)
def test_a_method_setting_peft_would_fail_on_is_refused_before_any_job(entry, message):
    config = load_config()
    config["strategies"]["x"] = entry
    with pytest.raises(ConfigError) as info:
        checked_config(config)
    assert message in str(info.value)
    # So is a tuning trial that would set it.
    config["strategies"]["x"] = {"method": entry["method"]}
    block = entry[entry["method"]]
    config["tuning"]["grid"] = {"x": {f"{entry['method']}.{key}": [value] for key, value in block.items()}}
    with pytest.raises(ConfigError, match="tuning.grid.x trial"):
        checked_config(config)


def test_an_oft_block_size_peft_would_change_is_refused(tiny_roberta):
    # PEFT fits a block size that does not divide a module's width to one that does, with a
    # warning only: train.json, the card and adapter_config.json would say 7, the model 6 or 8.
    entry = {"method": "oft", "oft": {"block_size": 7}}
    config = load_config()
    config["model"]["name_or_path"] = str(tiny_roberta)
    config["data"] = {"source": "hub"}
    config["training"]["max_length"] = 64
    config["strategies"]["oft"] = entry
    with pytest.raises(ConfigError) as info:
        checked_config(config, sources=True)  # a local model: before any job
    message = str(info.value)
    assert "strategies.oft.oft.block_size = 7 does not divide the input width [32]" in message
    assert "Allowed: [2, 4, 8, 16, 32]" in message
    # A hub model is read by the job: it refuses the same before it trains.
    spec = make_spec(tiny_roberta, "oft", entry)
    precision = resolve_precision(requested="auto", method="oft", device=CPU)
    with pytest.raises(ConfigError, match="strategies.oft.oft.block_size = 7 does not divide"):
        build_model(spec=spec, num_labels=2, device=CPU, precision=precision)
    config["strategies"]["oft"] = {"method": "oft", "oft": {"block_size": 8}}
    checked_config(config, sources=True)


# ------------------------------------------------------------------ where methods differ from LoRA


def test_missing_default_targets_name_what_to_set(tiny_roberta):
    # PEFT has default target modules for LoRA on RoBERTa, none for LN tuning.
    entry = {"method": "ln_tuning", "ln_tuning": {"target_modules": None}}
    config = load_config()
    config["model"]["name_or_path"] = str(tiny_roberta)
    config["data"] = {"source": "hub"}
    config["training"]["max_length"] = 64
    config["strategies"]["ln"] = entry
    config["strategies"]["lora"]["lora"] = {"target_modules": None}
    with pytest.raises(ConfigError) as info:
        checked_config(config, sources=True)
    message = str(info.value)
    assert "strategies.ln.ln_tuning.target_modules = null" in message and "LN_TUNING on model type 'roberta'" in message
    assert "set strategies.ln.ln_tuning.target_modules to a list of module names" in message
    # The job checks the same for a hub model, before it trains.
    spec = make_spec(tiny_roberta, "ln", entry)
    precision = resolve_precision(requested="auto", method="ln_tuning", device=CPU)
    with pytest.raises(ConfigError, match="strategies.ln.ln_tuning.target_modules = null"):
        build_model(spec=spec, num_labels=2, device=CPU, precision=precision)
    lora = make_spec(tiny_roberta, "lora", {"lora": {"target_modules": None}})
    assert peft_config(lora).target_modules is None  # PEFT's RoBERTa default: query, value
    model = build_model(spec=lora, num_labels=2, device=CPU, precision=precision)
    assert split_trainable(model)[0] == 2 * 2 * (8 * 32 + 32 * 8)


def head_input_length(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """The sequence length the classification head reads from."""
    seen = []
    head = model.get_base_model().classifier
    handle = head.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    model(input_ids=ids, attention_mask=torch.ones_like(ids))
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_the_head_reads_the_text_not_a_virtual_token(tiny_roberta, method):
    spec = make_spec(tiny_roberta, method)
    precision = resolve_precision(requested="auto", method=method, device=CPU)
    torch.manual_seed(0)
    model = build_model(spec=spec, num_labels=2, device=CPU, precision=precision).eval()
    ids = torch.randint(5, 900, (3, 24))
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    # RoBERTa's head pools position 0: the text's <s>, not the first of 20 virtual tokens.
    assert head_input_length(model, ids) == 24
    # The virtual tokens reach it through attention: changing them changes the logits.
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        for param in model.prompt_encoder.parameters():
            param.add_(torch.randn_like(param))
        after = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert not torch.allclose(before, after)


def test_virtual_tokens_shrink_the_text_to_the_position_limit(tiny_roberta, tiny_tokenized, tmp_path):
    # The tiny RoBERTa has 128 positions; 64 text tokens + 80 virtual ones would not fit.
    entry = {"method": "prompt_tuning", "prompt_tuning": {"num_virtual_tokens": 80}}
    spec = make_spec(tiny_roberta, "long_prompt", entry, bucket_width=None, cuda_graphs=False)  # pads to 8s
    result = train_run(
        spec=spec,
        tokenized_dir=tiny_tokenized,
        model_out_dir=tmp_path / "model",
        checkpoint_dir=tmp_path / "ckpt",
        device=CPU,
    )
    assert result.status == "ok", result.reason
    assert result.metrics["text_max_length"] == 48  # 128 - 80, a multiple of 8 (padding takes positions)
    config = load_config()
    config["model"]["name_or_path"] = str(tiny_roberta)
    config["data"] = {"source": "hub"}
    config["training"]["max_length"] = 64
    config["strategies"]["long_prompt"] = {**entry, "prompt_tuning": {"num_virtual_tokens": 120}}
    with pytest.raises(ConfigError, match="120 virtual tokens leave 8 of the 128 positions"):
        checked_config(config, sources=True)


def test_a_run_keeps_the_plans_text_budget_for_a_model_the_plan_could_not_read(tiny_roberta):
    # A hub model's positions are known only once downloaded: the run refuses what the plan would have.
    from ftcompare.model import text_length

    entry = {"method": "prompt_tuning", "prompt_tuning": {"num_virtual_tokens": 120}}
    spec = make_spec(tiny_roberta, "long_prompt", entry, bucket_width=None, cuda_graphs=False)
    with pytest.raises(ConfigError, match="120 virtual tokens leave 8 of the 128 positions .*at least 32 needed"):
        text_length(spec)


# --------------------------------------------------------------------------- parameter counts

H, LAYERS, FFN = 768, 12, 3072  # roberta-base
HEAD = (H * H + H) + (H * 2 + 2)  # RobertaClassificationHead: dense + out_proj
QV = LAYERS * 2  # query and value in every layer

# The method's own trainable weights on roberta-base's shape with the defaults of
# config/config.yaml, from each paper's construction.
FORMULAS = {
    "lora": QV * (8 * H + H * 8),  # A (r x in) + B (out x r)
    "qlora": QV * (8 * H + H * 8),
    "rslora": QV * (8 * H + H * 8),  # only the scale differs: alpha / sqrt(r)
    "dora": QV * (8 * H + H * 8 + H),  # + a magnitude per output feature
    "adalora": QV * (12 * H + H * 12 + 12),  # P, Q and the singular values at init_r
    "vera": QV * (256 + H),  # lambda_d (r) and lambda_b (out); the shared A, B are frozen buffers
    "loha": QV * 2 * (8 * H + H * 8),  # two rank-r products
    "lokr": QV * (24 * 24 + 32 * 8 + 8 * 32),  # 768 = 24 x 32: full 24x24 factor, rank-8 32x32 factor
    "ia3": LAYERS * (H + H + H + FFN),  # key, value outputs; attention and FFN output.dense inputs
    "oft": QV * (H // 32) * (32 * 31 // 2),  # 24 blocks of a skew-symmetric 32x32
    "prompt_tuning": 20 * H,
    "prefix_tuning": 20 * LAYERS * 2 * H,  # a key and a value per token per layer
    "p_tuning": 20 * H + (H * 128 + 128) + (128 * 128 + 128) + (128 * H + H),  # embeddings + 3-layer MLP
    "ln_tuning": (1 + 2 * LAYERS) * 2 * H,  # embeddings' and two per layer: gain and bias
    # Every bias: q, k, v, attention out, intermediate, output, two LayerNorms; the embeddings' LayerNorm.
    "bitfit": LAYERS * (4 * H + FFN + H + 2 * H) + H,
}


@pytest.fixture(scope="module")
def roberta_base_shape() -> torch.nn.Module:
    """roberta-base's architecture with no weights at all (the meta device): counts only."""
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(RobertaConfig(num_labels=2))


def test_lora_counts_are_the_issues_numbers():
    assert FORMULAS["lora"] == 294_912 and HEAD == 592_130 and FORMULAS["lora"] + HEAD == 887_042


@pytest.mark.parametrize("method", [*FORMULAS, "full"])
def test_trainable_parameters_match_the_formulas_on_roberta_base(roberta_base_shape, method):
    config = load_config()
    config["strategies"][method] = {}
    spec = resolve_run(checked_config(config), strategy=method, seed=0)
    model = add_method(copy.deepcopy(roberta_base_shape), spec=spec, total_steps=1000)
    own, head = split_trainable(model)
    trainable, total = count_parameters(model)
    if method == "full":
        assert (own, head) == (total - HEAD, HEAD) == (124_054_272, 592_130)
        return
    assert (own, head) == (FORMULAS[method], HEAD)
    assert trainable == own + head
