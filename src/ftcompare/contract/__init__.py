"""The bottom layer: what every stage agrees on, torch-free and importing nothing above it.

The results layout and names (layout), the study's output files and verdicts (outputs),
the record formats and their upgrade (records), metrics, provenance, atomic files, the
errors every check raises, where a model comes from (sources), and what each job does
before torch is imported (process, devices, allocator).
"""

from ftcompare._lazy import lazy_api

# Each module's public names; a name is imported from its module when first used.
_API = {
    "allocator": "ALLOCATOR_VARIABLES allocator_setting prefer_expandable_segments",
    "errors": "ConfigError UsageError",
    "files": "atomic_write_bytes atomic_writer remove_temporaries",
    "layout": (
        "EVALUATE_ATTEMPT FINETUNE_ATTEMPT PLAN_FILE RUN RUN_EXAMPLE TRIAL TRIAL_ATTEMPT TUNING_SUMMARY "
        "cache_key default_model_name default_task_name study_folder"
    ),
    "metrics": "LABELS METRICS all_scores check_metric confusion from_confusion macro_precision_recall score",
    "outputs": (
        "ACROSS_COLUMNS ACROSS_COST_COLUMNS ACROSS_FIGURE_CAPTIONS ACROSS_TABLE ACROSS_TASK_PREFIXES "
        "COUNTED_VERDICTS FIGURE_CAPTIONS FIGURE_NAMES VERDICT_COUNT_COLUMNS Verdict figure_names "
        "figure_place"
    ),
    "process": "one_line_errors setup_logging start_job",
    "provenance": "hardware now package_versions run_provenance write_json",
    "records": (
        "CELL_SETTINGS FIRST_ATTEMPT FORMAT_VERSION Status cell_settings read_record read_selection "
        "retry_marker upgrade versioned write_attempt write_selection"
    ),
    "sources": (
        "ADAPTER_WEIGHT_FILES ModelSourceError PACKAGE_PREFIX WEIGHT_FILES check_model_source "
        "check_max_length check_module_lists is_hub_id matches_module max_sequence_length model_file module_lists "
        "portable_model_name position_limit resolve_model_path safetensors_problem weight_module_names"
    ),
}
__getattr__, __dir__, __all__ = lazy_api(__name__, {n: m for m, names in _API.items() for n in names.split()})
