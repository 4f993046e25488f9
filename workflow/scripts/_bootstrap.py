"""Make the workflow's library (src/ftcompare) importable from a rule script, and set
the process up before torch is imported.

Snakemake puts this folder on sys.path; the library is two levels up, in src/. Each
script then calls `ftcompare.contract.process.start_job` (log file, no network, its own GPU) before
anything imports torch.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from ftcompare.contract import prefer_expandable_segments  # noqa: E402

prefer_expandable_segments()
