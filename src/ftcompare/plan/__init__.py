"""The plan: the study's config (loaded, validated, defaulted), its matrix of cells, every
check before any job runs (checks, preflight), tuning's grid and selection, each job's
cost and time limit, and the job graph's tables the Snakefile reads (graph). Planning
imports no torch, transformers or PEFT.
"""

from ftcompare._lazy import lazy_api

# Each module's public names; a name is imported from its module when first used.
_API = {
    "checks": "as_written checked_config checked_study reserved_task_names",
    "config": "DEFAULT_CONFIG REFERENCE_RECIPE REPO_ROOT load_config load_yaml resolve_run validate_config",
    "cost": "StudyCosts minutes",
    "graph": "StudyPlan run_params write_plan",
    "matrix": "Cell is_imdb task_unit",
    "preflight": "cell_cache_keys preflight_checks",
    "tuning": (
        "Trial TrialResult apply_selection select select_settings_job summary_keys summary_score trial_result "
        "trial_spec trials"
    ),
}
__getattr__, __dir__, __all__ = lazy_api(__name__, {n: m for m, names in _API.items() for n in names.split()})
