"""The README and the guides in docs/ stand alone: every relative link points at a file of the
repository, and none reaches outside it."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_point_at_files_of_the_repository(doc):
    text = doc.read_text()
    assert "../" not in text, f"{doc.name} points outside the repository"
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path = (doc.parent / target).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name}: broken link {target}"


def test_the_readme_links_the_architecture_guide():
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()
