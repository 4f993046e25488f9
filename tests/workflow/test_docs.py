"""The project's Markdown pages link to files and headings that exist: every relative link
in README.md, docs/*.md and the other pages resolves to a file, and a #fragment into a
Markdown page to one of its headings (as GitHub names them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [
        REPO_ROOT / "README.md",
        REPO_ROOT / "BENCHMARKS.md",
        REPO_ROOT / "profiles" / "README.md",
        REPO_ROOT / ".test" / "data" / "README.md",
        *(REPO_ROOT / "docs").glob("*.md"),
    ]
)

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """The page without its code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The fragments a page answers to: each heading's slug (a repeated one numbered -1,
    -2, ... as GitHub does) and explicit <a id> anchors."""
    text = page.read_text(encoding="utf-8")
    found: set[str] = set(HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` whose file, or whose heading in a Markdown file, is missing."""
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if SCHEME.match(target):
            continue  # a web address or mailto: not checked offline
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file ({resolved})")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading '{fragment}' in {resolved.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert page.exists()
    assert broken_links(page) == []


def test_broken_links_and_headings_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Failures, preemption and `resuming`\n\n## Same\n\n## Same\n")
    (tmp_path / "folder").mkdir()
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#failures-preemption-and-resuming), [second](other.md#same-1), [dir](folder),\n"
        "[self](#page), [web](https://example.org/missing.md), `[in code](missing.md)`\n\n"
        "```\n[in a block](gone.md)\n```\n\n"
        "[no file](missing.md) and [no heading](other.md#failures) and [no self heading](#nowhere)\n"
    )
    assert broken_links(page) == [
        f"missing.md: no such file ({tmp_path / 'missing.md'})",
        "other.md#failures: no heading 'failures' in other.md",
        "#nowhere: no heading 'nowhere' in page.md",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Failures, preemption and resuming", "failures-preemption-and-resuming"),
        (
            "6. Rerun triggers, failure cleanup, incomplete outputs",
            "6-rerun-triggers-failure-cleanup-incomplete-outputs",
        ),
        (
            "CPU (this project's 2-core machine, torch 2.13.0 CPU, 2026-11-26)",
            "cpu-this-projects-2-core-machine-torch-2130-cpu-2026-11-26",
        ),
        ("`default/` (a workstation)", "default-a-workstation"),
    ],
)
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
