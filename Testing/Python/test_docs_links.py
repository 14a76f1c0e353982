"""Static: the README and docs/*.md point only at things that exist, and the README fits on one screen.

Checked on every page, outside fenced code blocks:

* every relative Markdown link ``[text](path)`` (and image ``![alt](path)``) resolves, from the page's own
  folder as GitHub resolves it, to a file or folder inside the repository; an ``#anchor`` into a Markdown
  page must name one of its headings (GitHub's slugs); ``http(s):``/``mailto:`` links are not fetched;
* every backticked repository path exists: a code span such as ``Testing/benchmarks/loop.py`` or
  ``semisam/merge.py`` (one word holding a ``/``), a top-level folder (``Testing/``, ``.ci/``), a bare
  ``*.py`` name (some file of the repository has it), or the script a command runs
  (``Testing/benchmarks/loop.py --task thalamus``); rooted at the repository, at the page's folder, or at
  ``scripted_modules/`` (where the ``semisam`` package lives). Placeholders are not paths: a first part in
  capitals (``STORE/``, ``DIR/``), ``~``, ``$``, ``..``, ``<...>``, wildcards, the folders the commands
  create (``.venv/``, ``out/``), and single lower-case names (``docs/``, ``ckpt-NNNNNN/``: names of run
  files and store folders read the same).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README_MAX_LINES = 120

_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
#: Characters that make a code span a command, a pattern or a placeholder rather than a path.
_NOT_A_PATH = re.compile(r"[\s<>*?{}\[\]$~=:,;|()'\"@^!+]")
#: Folders the documented commands create: named in the docs, never part of a checkout.
_GENERATED = {".venv", "out"}
#: Where a backticked path may be rooted (besides the page's own folder).
_PATH_ROOTS = ("", "scripted_modules")
_SKIP_DIRS = {".git", ".venv", "__pycache__", ".ruff_cache", ".pytest_cache", "out", "node_modules"}


def doc_pages(root: Path = REPO) -> list[Path]:
    """README.md and every Markdown page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: formatting dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # emphasis underscores, not snake_case
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``page`` (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(page.read_text(encoding="utf-8")):
        m = _HEADING.match(line)
        if not m:
            continue
        slug = _slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _file_names(root: Path) -> set[str]:
    names = set()
    for _folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        names.update(files)
    return names


def repo_path_in(span: str) -> str | None:
    """The repository path a code span names, or None when it reads as something else (see the module
    docstring): the span itself, or the first word of a command that runs a script (``x/y.py --flag``)."""
    words = span.split()
    if len(words) > 1:
        script = words[0]
        return script if "/" in script and script.endswith(".py") and repo_path_in(script) else None
    if _NOT_A_PATH.search(span) or _SCHEME.match(span) or span.startswith(("-", "/", "..")):
        return None
    path = span.removeprefix("./")
    if "/" not in path.rstrip("/"):
        if path.endswith("/"):  # one folder: the top-level ones are CamelCase or hidden (`Testing/`, `.ci/`)
            return path if re.match(r"[A-Z][a-z]|\.\w", path) else None
        return path if path.endswith(".py") else None
    first = path.split("/", 1)[0]
    if first in _GENERATED or re.fullmatch(r"[A-Z][A-Z0-9_]*", first):
        return None
    return path


def check_link(page: Path, target: str, root: Path) -> str | None:
    """Why ``target`` (a link on ``page``) does not resolve, or None when it does (or is not checked)."""
    if _SCHEME.match(target):
        return None  # http(s), mailto: not fetched
    path_part, _, anchor = target.partition("#")
    if not path_part:
        dest = page
    elif path_part.startswith("/"):  # GitHub reads a leading / as the repository's root
        dest = root / path_part.lstrip("/")
    else:
        dest = page.parent / path_part
    if not _inside(dest, root):
        return f"link {target!r} leaves the repository"
    if not dest.exists():
        return f"link {target!r}: {dest.relative_to(root) if _inside(dest, root) else dest} does not exist"
    if anchor and dest.suffix == ".md" and dest.is_file() and anchor not in anchors(dest):
        return f"link {target!r}: no heading with anchor #{anchor} in {dest.relative_to(root)}"
    return None


def check_path(page: Path, span: str, root: Path, file_names: set[str]) -> str | None:
    """Why the backticked path ``span`` on ``page`` names nothing in the repository, or None."""
    if "/" not in span:
        return None if span in file_names else f"`{span}`: no file of that name in the repository"
    for base in [page.parent, *(root / r for r in _PATH_ROOTS)]:
        dest = base / span
        if _inside(dest, root) and dest.exists():
            return None
    return f"`{span}` exists neither under the repository root, {page.parent.relative_to(root) or '.'}/ nor scripted_modules/"


def page_problems(page: Path, root: Path = REPO, file_names: set[str] | None = None) -> list[str]:
    """Every link and repository path on ``page`` that does not resolve, as 'page:line: why'."""
    if file_names is None:
        file_names = _file_names(root)
    problems = []
    name = page.relative_to(root)
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        spans = [m.group(2).strip() for m in _CODE_SPAN.finditer(line)]
        prose = _CODE_SPAN.sub("code", line)  # a link written inside a code span is not a link
        for m in _LINK.finditer(prose):
            why = check_link(page, m.group(1), root)
            if why:
                problems.append(f"{name}:{number}: {why}")
        for span in spans:
            path = repo_path_in(span)
            why = path and check_path(page, path, root, file_names)
            if why:
                problems.append(f"{name}:{number}: {why}")
    return problems


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_and_paths_resolve(page):
    assert page.is_file(), f"{page.relative_to(REPO)} is missing"
    problems = page_problems(page)
    assert not problems, "\n".join(problems)


def test_readme_fits_one_screen():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail to a page in docs/"
    )


def test_checker_finds_broken_links_and_paths(tmp_path):
    """The checker itself: on a made-up repository it reports exactly the broken links and paths."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "real.py").write_text("")
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Two words\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Demo\n"
        "[ok](docs/guide.md) [ok anchor](docs/guide.md#two-words) [ok here](#demo) [web](https://example.org/x)\n"
        "[broken](docs/missing.md) [bad anchor](docs/guide.md#nowhere) [outside](../elsewhere.md)\n"
        "`pkg/real.py` `real.py` `STORE/training/job.json` `~/.cache/x` `.venv/bin/semisam` `a b/c`\n"
        "`pkg/gone.py` `gone.py` `Gone/` `pkg/real.py --flag` `pkg/gone.py --flag` `ckpt-NNNN/` `x.pt`\n"
        "```\n[in a code block](not/checked.md) `not/checked.py`\n```\n"
    )
    problems = page_problems(readme, tmp_path)
    assert len(problems) == 7, problems
    assert [p.split(":")[1] for p in problems] == ["3", "3", "3", "5", "5", "5", "5"], problems
    assert "docs/missing.md" in problems[0] and "#nowhere" in problems[1] and "leaves" in problems[2]
    assert "pkg/gone.py" in problems[3] and "gone.py" in problems[4] and "Gone/" in problems[5]
    assert "pkg/gone.py" in problems[6]
    assert not page_problems(tmp_path / "docs" / "guide.md", tmp_path)
