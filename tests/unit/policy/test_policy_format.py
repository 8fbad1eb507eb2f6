"""The policy files are in Cedar's canonical form (`cedar format`), so that a review diffs
what a rule means, not how it is laid out."""

from __future__ import annotations

from pathlib import Path

import cedarpy
import pytest

from services.policy import POLICY_DIR

POLICY_FILES = sorted(POLICY_DIR.glob("*.cedar"))


def test_there_are_policy_files_to_check() -> None:
    assert len(POLICY_FILES) >= 5


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_file_is_in_canonical_form(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text == cedarpy.format_policies(text), (
        f"{path.name} is not in Cedar's canonical form: rewrite it with "
        "cedarpy.format_policies (or `cedar format`)"
    )
