"""A bench's own section of a shared docs page, between markers, replaced in place on every run.

    write_section(DOCS / "benchmarks.md", "drift", "## Drift recovery ...")

Pages that another bench rewrites whole (docs/ab.md by bench/ab, docs/benchmarks.md by
bench/quality) keep everything from the first `<!-- bench ` marker on.
"""

from __future__ import annotations

import re
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench {name}: start -->", f"<!-- bench {name}: end -->"


def write_section(path: Path, name: str, body: str) -> None:
    start, end = markers(name)
    section = f"{start}\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def kept_sections(path: Path) -> str:
    """What a whole-page rewrite must append again: everything from the first bench marker."""
    text = path.read_text() if path.exists() else ""
    at = text.find("<!-- bench ")
    return "\n" + text[at:] if at >= 0 else ""
