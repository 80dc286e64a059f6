"""The repository carries its own documentation: every ``*.md`` document named in code, README, presets, reports and
result files exists in the repository, and every section cited as ``docs/<name>.md §N`` exists in that document."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED_SUFFIXES = (".py", ".md", ".toml", ".tex", ".json")
# A document name: a path of word characters, dots, dashes and slashes ending in .md; it may start after a slash
# (``<out>/report.md`` names ``report.md``) but not inside a longer word or path segment.
MENTION = re.compile(r"(?<![\w.-])\w[\w./-]*\.md\b")
# A cited section list: ``docs/theory.md §4``, ``docs/theory.md`` §2–5, ``docs/theory.md §2, §4``.
SECTION_LIST = r"§\s*\d+(?:\s*[–-]\s*§?\s*\d+)?"
CITATION = re.compile(rf"docs/(?P<doc>[\w-]+\.md)`?\s*(?P<refs>{SECTION_LIST}(?:\s*,\s*{SECTION_LIST})*)")
HEADING = re.compile(r"^#{2,3}\s+(\d+)\.\s", re.MULTILINE)


def repository_files() -> list[str]:
    """Tracked files and untracked files git does not ignore, relative to the root (``.venv``, results of local
    runs and caches are ignored)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [name for name in listed if (ROOT / name).is_file()]


def resolves(mention: str, source: str, files: set[str]) -> bool:
    """``mention`` names a file of the repository: from the root, from the mentioning file's folder, or as the tail
    of a repository path (a generated file named by its base name, such as ``report.md``)."""
    if mention in files or str(Path(source).parent / mention) in files:
        return True
    return any(name.endswith("/" + mention) for name in files)


def unresolved_mentions(text: str, source: str, files: set[str]) -> list[str]:
    return sorted({mention for mention in MENTION.findall(text) if not resolves(mention, source, files)})


def cited_sections(text: str) -> list[tuple[str, int]]:
    """Every (document, section number) cited as ``docs/<name>.md §N``; ranges ``§2–5`` are expanded."""
    cited = []
    for match in CITATION.finditer(text):
        for low, high in re.findall(r"(\d+)(?:\s*[–-]\s*§?\s*(\d+))?", match.group("refs")):
            cited += [(match.group("doc"), number) for number in range(int(low), int(high or low) + 1)]
    return cited


def numbered_sections(markdown: str) -> set[int]:
    """Section numbers of a document whose headings read ``## N. Title``."""
    return {int(number) for number in HEADING.findall(markdown)}


def scanned_texts() -> dict[str, str]:
    """Every scanned file but this one, whose test input names missing documents on purpose."""
    this = Path(__file__).resolve().relative_to(ROOT).as_posix()
    return {name: (ROOT / name).read_text(encoding="utf-8") for name in repository_files()
            if name.endswith(SCANNED_SUFFIXES) and name != this}


def test_every_markdown_document_named_in_the_repository_exists():
    """Each ``*.md`` mentioned in a tracked .py/.md/.toml/.tex/.json file resolves to a file of the repository:
    nothing points outside it (no notes kept elsewhere)."""
    files = set(repository_files())
    missing = {name: found for name, text in scanned_texts().items()
               if (found := unresolved_mentions(text, name, files))}
    assert missing == {}


def test_every_cited_docs_section_exists():
    """Each ``docs/<name>.md §N`` citation names a document of ``docs/`` that has a heading ``## N.``."""
    sections = {path.name: numbered_sections(path.read_text(encoding="utf-8")) for path in (ROOT / "docs").glob("*.md")}
    dangling = sorted({(name, doc, number) for name, text in scanned_texts().items()
                       for doc, number in cited_sections(text) if number not in sections.get(doc, set())})
    assert dangling == []


def test_the_checks_flag_a_missing_document_and_a_missing_section():
    """Both checks can fail: an outside document and an absent section are reported, present ones are not."""
    files = {"docs/theory.md", "results/quick/report.md", "paper_figs/README.md"}
    outside, absent = "OUTSIDE" + ".md", "docs/absent" + ".md"  # spelled apart: this file names no real document
    text = f"see {outside}, docs/theory.md, <out>/report.md, README.md and {absent}"
    assert unresolved_mentions(text, "paper_figs/fig.py", files) == [outside, absent]
    assert cited_sections("docs/theory.md §2–4 and `docs/paper.md` §3, §5") == [
        ("theory.md", 2), ("theory.md", 3), ("theory.md", 4), ("paper.md", 3), ("paper.md", 5)]
    assert numbered_sections("# Title\n## 1. One\ntext\n### 2. Two\n## Notes\n") == {1, 2}
