"""Web sessions are sealed with the key ring's web-session keys, not the pseudonym key, and
survive one rotation of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.web_auth import CookieSealer
from services.crypto import FileKeyRing
from services.errors import Unauthenticated


def test_a_session_sealed_before_a_rotation_still_opens(tmp_path: Path) -> None:
    ring = FileKeyRing.create(tmp_path / "keyring.json")
    sealed = CookieSealer(ring.web_session_keys()).seal("web_session:x", {"sub": "u1"})
    ring.rotate_web_session_key()
    after = CookieSealer(ring.web_session_keys())
    assert after.open("web_session:x", sealed) == {"sub": "u1"}
    ring.rotate_web_session_key()
    with pytest.raises(Unauthenticated):
        CookieSealer(ring.web_session_keys()).open("web_session:x", sealed)


def test_the_pseudonym_key_does_not_open_a_session(tmp_path: Path) -> None:
    ring = FileKeyRing.create(tmp_path / "keyring.json")
    sealed = CookieSealer(ring.web_session_keys()).seal("web_session:x", {"sub": "u1"})
    with pytest.raises(Unauthenticated):
        CookieSealer([ring.pseudonym_key()]).open("web_session:x", sealed)
