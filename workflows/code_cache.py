"""The workflow's module, compiled once per worker process, executed afresh for every run.

Temporal's sandbox imports a workflow's module anew for each workflow it runs, so that
each run has globals of its own. Python compiles a module from source unless it finds
bytecode it may read, and where none is written (PYTHONDONTWRITEBYTECODE, as CI and many
container images set it, or a read-only tree) every workflow a worker took up compiled
`workflows/referral.py` again: about 4 ms of CPU, two thirds of creating the run's
sandbox and a twentieth of the worker's busy time in a lifecycle benchmark (py-spy).

`CompiledOnce` hands such imports of the project's own packages a loader that keeps each
compiled module, keyed by its file, modification time and size: the module body still runs
in each run's fresh namespace, exactly as when Python reads bytecode from `__pycache__`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
from collections.abc import Sequence
from types import CodeType, ModuleType

# What `referral worker` runs in its sandboxes comes from these packages.
PROJECT_PACKAGES = ("workflows", "services")

_codes: dict[tuple[str, int, int], CodeType] = {}
_lock = threading.Lock()


class _KeptCodeLoader(importlib.machinery.SourceFileLoader):
    """A source loader that compiles each version of a file once per process."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        with _lock:
            code = _codes.get(key)
        if code is None:
            compiled = super().get_code(fullname)
            if compiled is None:  # a source loader always yields code; stay safe
                raise ImportError(f"no code for {fullname}", name=fullname)
            with _lock:
                code = _codes.setdefault(key, compiled)
        return code


class CompiledOnce(importlib.abc.MetaPathFinder):
    """Finds the project's modules as the path finder does, with `_KeptCodeLoader`."""

    def __init__(self, packages: Sequence[str] = PROJECT_PACKAGES) -> None:
        self.packages = frozenset(packages)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in self.packages:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = None if spec is None else spec.loader
        if spec is None or type(loader) is not importlib.machinery.SourceFileLoader:
            return spec
        spec.loader = _KeptCodeLoader(loader.name, loader.path)
        return spec


def keep_compiled_modules(packages: Sequence[str] = PROJECT_PACKAGES) -> None:
    """Install `CompiledOnce` first on `sys.meta_path`, once per process."""
    if not any(isinstance(finder, CompiledOnce) for finder in sys.meta_path):
        sys.meta_path.insert(0, CompiledOnce(packages))
