"""Models: load an encoder from its source, apply a method to it (full, BitFit, every PEFT
method, a 4-bit base), save and load what trained, and run it over a tokenized split
(inference); the device, autocast and peak memory (device).
"""

from ftcompare._lazy import lazy_api

# Each module's public names; a name is imported from its module when first used.
_API = {
    "build": (
        "NotMergeable Precision StrategyUnavailable add_method build_model count_parameters fit_text_budget "
        "in_head load_merged load_trained method_step module_names module_widths peft_config peft_wrapping "
        "resolve_precision save_trained split_trainable text_length transformers_model"
    ),
    "device": "autocast peak_memory select_device",
    "inference": "NonFiniteLogits check_finite latency_sample predict_logits review_latencies softmax_cross_entropy",
}
__getattr__, __dir__, __all__ = lazy_api(__name__, {n: m for m, names in _API.items() for n in names.split()})
