"""System tools from Debian's packages that some tests drive (chromium, wrk)."""

from __future__ import annotations

import os
import shutil

import pytest


def require(command: str, reason: str) -> str:
    """The path of `command`; without it CI fails and a developer's run skips, with `reason`
    (`make test` installs the tool when run as root)."""
    path = shutil.which(command)
    if path:
        return path
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason}; CI must run them", pytrace=False)
    pytest.skip(reason)
