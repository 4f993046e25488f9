"""report.md as an HTML fragment, for the landing page of the HTML report (`snakemake --report`).

Snakemake renders the workflow's description (workflow/report/workflow.rst) with docutils,
which cannot read Markdown; the description includes this fragment as raw HTML. It is
whatever report.md says, converted (tables included), with each figure embedded, since the
report is one self-contained file in which report.md's relative image paths resolve to
nothing. The style block lets the landing page, a narrow column centred on the screen by
Snakemake's layout beside the rule graph, hold wide tables, open at the report's first line
with the rule graph below it, and show code as text (the page's typography would put
backticks around it).
"""

from __future__ import annotations

import base64
import mimetypes
import xml.etree.ElementTree as etree
from pathlib import Path

import markdown
from markdown.treeprocessors import Treeprocessor

# The fragment's own class: the rules below touch nothing of Snakemake's page but the
# column and the screen that hold it.
PAGE_CLASS = "ftcompare-report"
STYLE = f"""<style>
.prose:has(.{PAGE_CLASS}) {{ max-width: min(72rem, 100%); }}
.h-screen:has(.{PAGE_CLASS}) {{ align-items: flex-start; justify-content: flex-start; }}
.flex:has(> * > .prose .{PAGE_CLASS}) {{ flex-wrap: wrap; }}
.{PAGE_CLASS} table {{ display: block; overflow-x: auto; font-size: 0.8em; }}
.{PAGE_CLASS} img {{ max-width: 100%; }}
.{PAGE_CLASS} code::before, .{PAGE_CLASS} code::after {{ content: none; }}
</style>"""


class _EmbedImages(Treeprocessor):
    """Each image whose file is found beside the report becomes a data URI."""

    def __init__(self, md: markdown.Markdown, base: Path) -> None:
        super().__init__(md)
        self.base = base

    def run(self, root: etree.Element) -> None:
        for image in root.iter("img"):
            path = self.base / (image.get("src") or "")
            if path.is_file():
                mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                image.set("src", f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}")


def markdown_page(text: str, *, base: Path) -> str:
    """`text` (Markdown) as an HTML fragment; images relative to `base` embedded."""
    converter = markdown.Markdown(extensions=["tables"])
    converter.treeprocessors.register(_EmbedImages(converter, Path(base)), "embed_images", 0)
    return f'{STYLE}\n<div class="{PAGE_CLASS}">\n{converter.convert(text)}\n</div>\n'


def write_report_page(report_path: Path, page_path: Path) -> None:
    """Write report.md's fragment to `page_path` (workflow.rst reads it as report.md's path + ".html")."""
    report_path = Path(report_path)
    Path(page_path).write_text(markdown_page(report_path.read_text(), base=report_path.parent))
