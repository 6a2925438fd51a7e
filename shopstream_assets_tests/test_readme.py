"""The README stays true to the code where a test can tell: its configuration table and its links."""

from __future__ import annotations

import re
from pathlib import Path

from shopstream.settings import VARIABLES

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"


def test_the_configuration_table_lists_exactly_the_variables_settings_reads() -> None:
    """Fails when a variable is added to settings.py without a README row, or a row outlives its variable."""
    listed = set(re.findall(r"^\| `(SHOPSTREAM_[A-Z_]+)` \|", README.read_text(), re.MULTILINE))
    assert listed == set(VARIABLES), {"missing": set(VARIABLES) - listed, "stale": listed - set(VARIABLES)}


def test_every_relative_link_of_the_readme_and_docs_resolves() -> None:
    broken = []
    for page in [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO_ROOT)} -> {target}")
    assert not broken, broken
