"""Make the workflow's library (src/ftcompare) importable from a rule script.

Snakemake puts this folder on sys.path; the library is two levels up, in src/.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
