"""Evaluation: a trained run on the test split, its metrics with uncertainty and its
predictions (scoring), its model card (modelcard), and the evaluate rule's job (job).
"""

from ftcompare._lazy import lazy_api

# Each module's public names; a name is imported from its module when first used.
_API = {
    "job": "evaluate_job",
    "modelcard": "EXAMPLE_REVIEWS load_snippet render_model_card write_model_card",
    "scoring": "Z_95 classification_metrics predictions_frame softmax wilson_interval",
}
__getattr__, __dir__, __all__ = lazy_api(__name__, {n: m for m, names in _API.items() for n in names.split()})
