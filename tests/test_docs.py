"""Every relative link in the README and docs/ leads somewhere: the file exists and, where the link names a section
(`page.md#anchor`), the page has a heading with that anchor, as GitHub derives it."""
import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, only letters, marks, digits, '_', '-' and spaces kept, spaces to
    hyphens."""
    kept = "".join(c for c in heading.lower()
                   if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc")
    return kept.replace(" ", "-")


@cache  # a page is linked many times
def anchors(page: Path) -> set[str]:
    """Every heading's anchor, a repeated heading's with GitHub's -1, -2 … suffix."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            a = anchor(m.group(1).strip())
            out.add(a if a not in seen else f"{a}-{seen[a]}")
            seen[a] = seen.get(a, 0) + 1
    return out


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", page.read_text()))
            if not re.match(r"[a-z]+:", t)]  # http:, https:, mailto: lead elsewhere


def test_anchor_follows_github():
    assert anchor("Primary endpoint: D = J(dpg_adamw) − J(naive), paired by seed") == \
        "primary-endpoint-d--jdpg_adamw--jnaive-paired-by-seed"
    assert anchor("Does DPG's data help a target it never trained against?") == \
        "does-dpgs-data-help-a-target-it-never-trained-against"
    assert anchor("The batch-size sweep: sixseven and l2_norm at 1,024 completions per step") == \
        "the-batch-size-sweep-sixseven-and-l2_norm-at-1024-completions-per-step"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        path, _, section = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif section and dest.suffix == ".md" and section not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{section} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)
