"""Reading a SQLite database's files (the database, its write-ahead log) as an attacker
would, without breaking the test run that has them open.

Opening and closing a descriptor of the database file in a process that has it open drops
every POSIX lock SQLite holds on it there (sqlite.org/howtocorrupt.html, 2.2). Writers in
other processes (the workers the crash tests start) then write under this process's reads,
and its connections fail from then on: a purge that failed this way retried for ever and
held the time-skipping server's clock. So the bytes are read by another process.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def database_files(path: Path) -> bytes:
    """The bytes of the database at `path` and its companion files, read by `cat`."""
    files = sorted(str(p) for p in path.parent.glob(path.name + "*"))
    if not files:
        return b""
    return subprocess.run(["cat", *files], capture_output=True, check=True).stdout
