"""The report: run records into tables, which differences are real (stats), the figures,
report.md and its HTML page, published figures beside the study's own, and the report
rule's job (job).
"""

from ftcompare._lazy import lazy_api

# Each module's public names; a name is imported from its module when first used.
_API = {
    "figures": "grouped_order heatmap_data plot_across_tasks plot_figures",
    "html": "markdown_page",
    "job": "report_job",
    "markdown": "render_markdown render_study_markdown",
    "published": "PUBLISHED_DIR load_papers published_section",
    "stats": (
        "SEED_BOOTSTRAP_TEST detectable_difference holm learned mean_interval paired_bootstrap paired_comparison"
    ),
    "tables": (
        "Results SUMMARY_COLUMNS StudyResults across_tasks aggregate_by_strategy cell_scores load_runs summary_table "
        "write_summary_csv"
    ),
}
__getattr__, __dir__, __all__ = lazy_api(__name__, {n: m for m, names in _API.items() for n in names.split()})
