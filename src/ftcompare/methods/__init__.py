"""The fine-tuning methods as data: the catalogue (one entry per method, the one place a
method is defined), each method's PEFT settings and what PEFT can and cannot do with it
(adapters), and one run's settings (spec.RunSpec). Torch-free; PEFT is imported only
where a check asks it.
"""

from ftcompare._lazy import lazy_api

# Each module's public names; a name is imported from its module when first used.
_API = {
    "adapters": (
        "MIN_TEXT_TOKENS check_default_targets check_peft_block check_quantization default_target_checks peft_settings "
        "text_budget virtual_tokens"
    ),
    "catalogue": (
        "BLOCKS BLOCK_SCHEMAS DEFAULTED_BLOCKS FAMILIES METHODS METHOD_BLOCKS METHOD_TABLE "
        "WHOLE_MODEL_METHODS check_model check_widths method_family"
    ),
    "spec": "RunSpec",
}
__getattr__, __dir__, __all__ = lazy_api(__name__, {n: m for m, names in _API.items() for n in names.split()})
