"""The documentation: README.md is a short front door, docs/ holds the manuals, and no link is broken.

Links are checked the way GitHub renders them: relative to the page, with `#anchors` matched against
the target's headings slugged by GitHub's rule (lowercase, punctuation other than `-` and spaces
dropped, spaces turned into `-`, a repeated heading getting `-1`, `-2`, ...).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_LIMIT_BYTES = 12_000

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^()\s]*)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _without_code(text: str) -> str:
    """The page without fenced code blocks and inline code, where `[x](y)` and `# x` are not markdown."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor GitHub gives the headings of a page, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def relative_links(page: Path) -> list[str]:
    """The link targets of a page that point into the repository (no URL scheme)."""
    return [target for target in LINK.findall(_without_code(page.read_text())) if not SCHEME.match(target)]


def _resolve(page: Path, target: str) -> tuple[Path, str]:
    path, _, anchor = target.partition("#")
    return ((page.parent / path).resolve() if path else page), anchor


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in relative_links(page):
        path, anchor = _resolve(page, target)
        where = f"{page.relative_to(ROOT)}: ({target})"
        if not path.exists():
            problems.append(f"{where}: no such file {path}")
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path)):
            problems.append(f"{where}: no heading with the anchor #{anchor} in {path.relative_to(ROOT)}")
    return problems


def test_slug_follows_githubs_rule() -> None:
    assert slug("Deploying with `pulumi up`") == "deploying-with-pulumi-up"
    assert slug("What the seed got wrong, and what this does instead") == (
        "what-the-seed-got-wrong-and-what-this-does-instead"
    )
    assert slug("Users, TLS and password rotation") == "users-tls-and-password-rotation"
    assert slug("x-y: 1 (z)") == "x-y-1-z"


def test_readme_is_a_short_front_door() -> None:
    size = len(README.read_bytes())
    assert size < README_LIMIT_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_every_relative_link_and_anchor_resolves() -> None:
    pages = _pages()
    assert len(pages) > 10
    assert sum(len(relative_links(page)) for page in pages) > 20
    problems = [problem for page in pages for problem in broken_links(page)]
    assert problems == []


def test_readme_links_every_docs_page() -> None:
    linked = {_resolve(README, target)[0] for target in relative_links(README)}
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 8
    unlinked = [str(page.relative_to(ROOT)) for page in pages if page not in linked]
    assert unlinked == []
    runbooks = DOCS / "runbooks"
    assert runbooks in linked or runbooks / "README.md" in linked, "README.md does not link docs/runbooks/"


def test_readme_layout_names_every_smoke_subdirectory() -> None:
    match = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", README.read_text(), re.MULTILINE | re.DOTALL)
    assert match, "README.md has no ## Layout section"
    layout = match.group(1)
    subdirectories = {
        path.name for path in (ROOT / "smoke").iterdir() if path.is_dir() and not path.name.startswith(("_", "."))
    }
    assert {"strategies", "checks", "local", "drills", "bench"} <= subdirectories
    missing = sorted(name for name in subdirectories if f"smoke/{name}/" not in layout)
    assert missing == []
