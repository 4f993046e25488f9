"""Using a study: `ftcompare` (cli) with predict and export of a trained run (predict),
`ftcompare status` (status), `ftcompare plan` (ftcompare.plan.estimate) and
`ftcompare calibrate` (calibration).
"""

from ftcompare._lazy import lazy_api

# Each module's public names; a name is imported from its module when first used.
_API = {
    "cli": "main",
    "runs": "export_merged load_for_inference open_run predict read_texts",
    "status": "render study_rows",
}
__getattr__, __dir__, __all__ = lazy_api(__name__, {n: m for m, names in _API.items() for n in names.split()})
