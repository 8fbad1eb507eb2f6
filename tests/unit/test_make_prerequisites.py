"""`make run` checks Keycloak's prerequisites (Java 17+, Maven, unzip) before anything else:
as root it installs the Debian packages, otherwise it stops and prints the exact command.
Run against a PATH of stand-ins, so the test neither needs nor installs anything."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bin(tmp_path: Path, *, uid: int, java: str | None, mvn: bool, unzip: bool) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("sh", "sed", "head", "make"):
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    stand_ins = {"id": f"echo {uid}", "apt-get": 'echo "apt-get $*" >> "$APT_LOG"'}
    if java is not None:
        stand_ins["java"] = f"echo 'openjdk version \"{java}\" 2025-04-15' >&2"
    if mvn:
        stand_ins["mvn"] = "true"
    if unzip:
        stand_ins["unzip"] = "true"
    for name, body in stand_ins.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return folder


def _make(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(folder), "APT_LOG": str(tmp_path / "apt.log"), "HOME": str(tmp_path)}
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), "keycloak-prerequisites"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_user_without_java_or_maven_is_told_the_exact_command(tmp_path: Path) -> None:
    result = _make(_bin(tmp_path, uid=1000, java=None, mvn=False, unzip=True), tmp_path)
    assert result.returncode != 0
    assert "sudo apt-get install -y openjdk-17-jre-headless maven" in result.stderr
    assert not (tmp_path / "apt.log").exists()


def test_an_old_java_counts_as_missing(tmp_path: Path) -> None:
    result = _make(_bin(tmp_path, uid=1000, java="11.0.2", mvn=True, unzip=True), tmp_path)
    assert result.returncode != 0
    assert "sudo apt-get install -y openjdk-17-jre-headless" in result.stderr


def test_root_gets_the_debian_packages_installed(tmp_path: Path) -> None:
    result = _make(_bin(tmp_path, uid=0, java=None, mvn=False, unzip=False), tmp_path)
    assert result.returncode == 0, result.stderr
    installed = (tmp_path / "apt.log").read_text()
    assert "install -y -qq --no-install-recommends openjdk-17-jre-headless maven unzip" in installed


@pytest.mark.parametrize("uid", [0, 1000])
def test_nothing_happens_when_all_is_there(tmp_path: Path, uid: int) -> None:
    result = _make(_bin(tmp_path, uid=uid, java="21.0.5", mvn=True, unzip=True), tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "apt.log").exists()
