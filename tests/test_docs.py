"""Tests of the project's Markdown: every relative link resolves, and no text cites material outside the repo."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT

#: The documents a reader follows links in: the README, docs/, the changelog, the examples' and benchmarks' READMEs.
DOCUMENTS = sorted({ROOT / "README.md", ROOT / "CHANGELOG.md", *ROOT.glob("docs/*.md"), *ROOT.glob("examples/**/*.md"),
                    *ROOT.glob("benchmarks/*.md")})
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """*text* without code blocks and code spans, where brackets are code, not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def anchors(document: Path) -> set[str]:
    """The anchors GitHub gives the headings of *document*: lower case, spaces as ``-``,
    punctuation other than ``-`` and ``_`` dropped, code marks dropped."""
    found = set()
    for line in _FENCE.sub("", document.read_text(encoding="utf-8")).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().replace("`", "").lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def broken_links(document: Path) -> list[str]:
    """The relative links of *document* whose file, or whose heading after ``#``, does not exist."""
    broken = []
    for target in _LINK.findall(prose(document.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not a file of the repo
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    """Each relative link of the document names a file of the repo (and a heading of it after ``#``)."""
    assert [] == broken_links(document)


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    """The check itself: a link to a file that is not there and to a heading that is not there are
    both broken; links in code, to the web and to real headings are not."""
    (tmp_path / "other.md").write_text("# Other\n\n## Steps and `axes`\n")
    page = tmp_path / "page.md"
    page.write_text("[a](other.md) [b](other.md#steps-and-axes) [c](gone.md) [d](other.md#nowhere) "
                    "[e](https://example.com/x.md) `[f](gone2.md)`\n\n```\n[g](gone3.md)\n```\n")
    assert ["gone.md", "other.md#nowhere"] == broken_links(page)


def test_the_readme_opens_with_the_example_and_test_commands_and_is_short() -> None:
    """The README's first code block runs the main example, then the tests; the README stays about 5 KB."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert ["python examples/pipeline/orchestrate.py", "python -m pytest"] == [
        line.rsplit("&& ", 1)[-1] for line in first_block]
    assert readme.index("```bash") < readme.index("\n## ")
    assert len(readme.encode()) < 6000


def test_no_text_cites_material_outside_the_repo() -> None:
    """No tracked file names the team's reference notes or folders outside the repository."""
    pattern = "WANDB_" + "FACTS|shared/" + "reference|\\.\\./" + "shared"
    found = subprocess.run(["git", "grep", "-n", "-E", pattern], cwd=ROOT, capture_output=True, text=True,
                           check=False)
    assert "" == found.stdout
