"""The worker compiles the workflow's module once, though the sandbox imports it per run."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflows.code_cache import CompiledOnce, keep_compiled_modules

PACKAGE = "kept_code_probe"


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, list[str]]]:
    """A package on sys.path with no bytecode to read, and a log of every compilation."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flow.py").write_text("RUNS = []\nRUNS.append('run')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # as PYTHONDONTWRITEBYTECODE
    compiled: list[str] = []
    source_to_code = importlib.machinery.SourceFileLoader.source_to_code

    def counting(self: importlib.machinery.SourceFileLoader, data: bytes, path: str) -> object:
        compiled.append(os.path.basename(path))
        return source_to_code(self, data, path)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.machinery.SourceFileLoader, "source_to_code", counting)
    finder = CompiledOnce([PACKAGE])
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    yield package / "flow.py", compiled
    for name in [n for n in sys.modules if n.partition(".")[0] == PACKAGE]:
        del sys.modules[name]


def fresh_import(name: str) -> object:
    """Import `name` as the sandbox does for each run: nothing of it loaded yet."""
    for loaded in [n for n in sys.modules if n.partition(".")[0] == PACKAGE]:
        del sys.modules[loaded]
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_a_module_imported_again_is_not_compiled_again(
    probe: tuple[Path, list[str]],
) -> None:
    _, compiled = probe
    first = fresh_import(f"{PACKAGE}.flow")
    second = fresh_import(f"{PACKAGE}.flow")
    assert compiled.count("flow.py") == 1
    # each import still runs the module's body in a namespace of its own
    assert first is not second
    assert first.RUNS == ["run"] and second.RUNS == ["run"]  # type: ignore[attr-defined]
    assert first.RUNS is not second.RUNS  # type: ignore[attr-defined]


def test_a_changed_file_is_compiled_again(probe: tuple[Path, list[str]]) -> None:
    source, compiled = probe
    assert fresh_import(f"{PACKAGE}.flow").RUNS == ["run"]  # type: ignore[attr-defined]
    source.write_text("RUNS = ['changed', 'and longer']\n")
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fresh_import(f"{PACKAGE}.flow").RUNS == ["changed", "and longer"]  # type: ignore[attr-defined]
    assert compiled.count("flow.py") == 2


def test_other_packages_are_left_to_the_path_finder(probe: tuple[Path, list[str]]) -> None:
    finder = CompiledOnce([PACKAGE])
    assert finder.find_spec("json", None) is None
    spec = finder.find_spec(PACKAGE, None)
    assert spec is not None and type(spec.loader).__name__ == "_KeptCodeLoader"


def test_installed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    keep_compiled_modules()
    keep_compiled_modules()
    assert sum(isinstance(f, CompiledOnce) for f in sys.meta_path) == 1
    assert isinstance(sys.meta_path[0], CompiledOnce)
