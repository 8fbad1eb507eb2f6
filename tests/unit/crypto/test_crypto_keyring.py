"""The development key ring: file safety, wrapping, rotation and retirement."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from services.crypto import (
    DecryptionError,
    FileKeyRing,
    KeyRing,
    KeyRingError,
    UnknownKeyVersion,
    WrappedKey,
)


def test_the_file_is_private_and_marked_development_only(keyring: FileKeyRing) -> None:
    assert stat.S_IMODE(keyring.path.stat().st_mode) == 0o600
    document = json.loads(keyring.path.read_text())
    assert document["development_only"] is True


def test_a_loaded_ring_holds_the_same_keys(keyring: FileKeyRing) -> None:
    loaded = FileKeyRing.load(keyring.path)
    assert loaded.current_kek_version() == keyring.current_kek_version()
    assert loaded.pseudonym_key() == keyring.pseudonym_key()
    key_id = keyring.current_payload_key_id()
    assert loaded.payload_key(key_id) == keyring.payload_key(key_id)
    signature = keyring.audit_signing_key().sign(b"tree head")
    loaded.audit_signing_key().public_key().verify(signature, b"tree head")


def test_keys_are_random_per_ring(tmp_path: Path) -> None:
    first = FileKeyRing.create(tmp_path / "a.json")
    second = FileKeyRing.create(tmp_path / "b.json")
    assert first.pseudonym_key() != second.pseudonym_key()
    assert len(first.pseudonym_key()) == 32
    assert first.current_kek_version() != second.current_kek_version()


def test_create_refuses_to_overwrite(keyring: FileKeyRing) -> None:
    with pytest.raises(KeyRingError):
        FileKeyRing.create(keyring.path)


def test_load_or_create_creates_once(keyring_path: Path) -> None:
    created = FileKeyRing.load_or_create(keyring_path)
    again = FileKeyRing.load_or_create(keyring_path)
    assert again.pseudonym_key() == created.pseudonym_key()


def test_load_refuses_a_file_others_can_read(keyring: FileKeyRing) -> None:
    os.chmod(keyring.path, 0o644)
    with pytest.raises(KeyRingError, match="0600"):
        FileKeyRing.load(keyring.path)


def test_load_refuses_a_ring_not_marked_development_only(keyring: FileKeyRing) -> None:
    document = json.loads(keyring.path.read_text())
    document["development_only"] = False
    keyring.path.write_text(json.dumps(document))
    with pytest.raises(KeyRingError, match="development_only"):
        FileKeyRing.load(keyring.path)


def test_load_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError):
        FileKeyRing.load(tmp_path / "nope.json")


def test_wrap_round_trip_names_the_current_version(keyring: FileKeyRing) -> None:
    ring: KeyRing = keyring
    data_key = os.urandom(32)
    wrapped = ring.wrap(data_key)
    assert wrapped.kek_version == ring.current_kek_version()
    assert data_key not in wrapped.ciphertext
    assert ring.unwrap(wrapped) == data_key


def test_a_tampered_wrap_fails(keyring: FileKeyRing) -> None:
    wrapped = keyring.wrap(os.urandom(32))
    flipped = bytes([wrapped.ciphertext[-1] ^ 1])
    with pytest.raises(DecryptionError):
        keyring.unwrap(WrappedKey(wrapped.kek_version, wrapped.ciphertext[:-1] + flipped))


def test_a_wrap_relabelled_with_another_version_fails(keyring: FileKeyRing) -> None:
    wrapped = keyring.wrap(os.urandom(32))
    other = keyring.rotate()
    with pytest.raises(DecryptionError):
        keyring.unwrap(WrappedKey(other, wrapped.ciphertext))


def test_an_unknown_version_fails(keyring: FileKeyRing) -> None:
    wrapped = keyring.wrap(os.urandom(32))
    with pytest.raises(UnknownKeyVersion):
        keyring.unwrap(WrappedKey("kek-99-abcdef", wrapped.ciphertext))


def test_rotation_persists_and_keeps_old_versions_readable(keyring: FileKeyRing) -> None:
    data_key = os.urandom(32)
    old = keyring.wrap(data_key)
    new_version = keyring.rotate()
    assert new_version != old.kek_version
    assert keyring.current_kek_version() == new_version
    assert keyring.wrap(data_key).kek_version == new_version
    reloaded = FileKeyRing.load(keyring.path)
    assert reloaded.current_kek_version() == new_version
    assert reloaded.unwrap(old) == data_key
    assert stat.S_IMODE(keyring.path.stat().st_mode) == 0o600
    # The atomic write leaves no temporary file behind.
    assert sorted(p.name for p in keyring.path.parent.iterdir()) == ["keyring.json"]


def test_another_process_sees_a_rotation(keyring: FileKeyRing) -> None:
    running = FileKeyRing.load(keyring.path)
    keyring.rotate()
    wrapped = keyring.wrap(os.urandom(32))
    assert running.unwrap(wrapped) == keyring.unwrap(wrapped)


def test_retire_destroys_a_version(keyring: FileKeyRing) -> None:
    old = keyring.wrap(os.urandom(32))
    with pytest.raises(KeyRingError):
        keyring.retire(old.kek_version)
    keyring.rotate()
    keyring.retire(old.kek_version)
    with pytest.raises(UnknownKeyVersion):
        keyring.unwrap(old)
    with pytest.raises(UnknownKeyVersion):
        FileKeyRing.load(keyring.path).unwrap(old)
    assert old.kek_version not in json.loads(keyring.path.read_text())["kek"]["versions"]


def test_payload_key_rotation_keeps_old_ids(keyring: FileKeyRing) -> None:
    old_id = keyring.current_payload_key_id()
    old_key = keyring.payload_key(old_id)
    new_id = keyring.rotate_payload_key()
    assert keyring.current_payload_key_id() == new_id != old_id
    assert keyring.payload_key(old_id) == old_key
    assert len(keyring.payload_key(new_id)) == 32
    with pytest.raises(UnknownKeyVersion):
        keyring.payload_key("pk-404-000000")


# ---- one key per job -------------------------------------------------------------------


def test_every_job_has_a_key_of_its_own(keyring: FileKeyRing) -> None:
    payload = keyring.payload_key(keyring.current_payload_key_id())
    [session] = keyring.web_session_keys()
    kek = json.loads(keyring.path.read_text())["kek"]
    kek_key = kek["versions"][kek["current"]]["key"]
    keys = [payload, session, keyring.pseudonym_key(), keyring.audit_pseudonym_key()]
    keys.append(base64.b64decode(kek_key))
    assert len({*keys}) == len(keys)
    assert session != keyring.pseudonym_key()


def test_the_web_session_key_rotates_alone(keyring: FileKeyRing) -> None:
    [before] = keyring.web_session_keys()
    pseudonym, payload_id = keyring.pseudonym_key(), keyring.current_payload_key_id()
    kek = keyring.current_kek_version()
    keyring.rotate_web_session_key()
    current, previous = FileKeyRing.load(keyring.path).web_session_keys()
    assert previous == before and current != before
    assert keyring.pseudonym_key() == pseudonym
    assert keyring.current_payload_key_id() == payload_id
    assert keyring.current_kek_version() == kek
    # only the key before the current one stays: sessions live hours, not rotations
    keyring.rotate_web_session_key()
    assert before not in keyring.web_session_keys()
    assert len(keyring.web_session_keys()) == 2


def test_the_payload_key_rotates_alone(keyring: FileKeyRing) -> None:
    sessions, pseudonym = keyring.web_session_keys(), keyring.pseudonym_key()
    keyring.rotate_payload_key()
    assert keyring.web_session_keys() == sessions and keyring.pseudonym_key() == pseudonym


def test_a_ring_from_before_web_session_keys_gets_one(keyring: FileKeyRing) -> None:
    document = json.loads(keyring.path.read_text())
    del document["web_session"]
    keyring.path.write_text(json.dumps(document))
    older = FileKeyRing.load(keyring.path)
    [session] = older.web_session_keys()
    assert session != older.pseudonym_key()
    assert FileKeyRing.load(keyring.path).web_session_keys() == (session,)
    assert stat.S_IMODE(keyring.path.stat().st_mode) == 0o600


# ---- pseudonym key versions ------------------------------------------------------------


def test_the_pseudonym_key_rotates_alone_and_old_versions_stay(keyring: FileKeyRing) -> None:
    old_id, old_key = keyring.pseudonym_keys()[0]
    sessions, payload_id = keyring.web_session_keys(), keyring.current_payload_key_id()
    kek, audit = keyring.current_kek_version(), keyring.audit_pseudonym_key()
    new_id = keyring.rotate_pseudonym_key()
    reloaded = FileKeyRing.load(keyring.path)
    assert new_id != old_id and reloaded.current_pseudonym_key_id() == new_id
    assert [k for k, _ in reloaded.pseudonym_keys()] == [new_id, old_id]
    assert dict(reloaded.pseudonym_keys())[old_id] == old_key
    assert reloaded.pseudonym_key() == dict(reloaded.pseudonym_keys())[new_id] != old_key
    assert reloaded.pseudonym_key_created_at(new_id) >= reloaded.pseudonym_key_created_at(old_id)
    # no other job's key moved, and the audit entries' pseudonym key never rotates
    assert reloaded.web_session_keys() == sessions
    assert reloaded.current_payload_key_id() == payload_id
    assert reloaded.current_kek_version() == kek
    assert reloaded.audit_pseudonym_key() == audit
    assert audit not in {key for _, key in reloaded.pseudonym_keys()}


def test_retiring_a_pseudonym_key_destroys_it(keyring: FileKeyRing) -> None:
    old_id = keyring.current_pseudonym_key_id()
    with pytest.raises(KeyRingError, match="current"):
        keyring.retire_pseudonym_key(old_id)
    new_id = keyring.rotate_pseudonym_key()
    keyring.retire_pseudonym_key(old_id)
    reloaded = FileKeyRing.load(keyring.path)
    assert [k for k, _ in reloaded.pseudonym_keys()] == [new_id]
    with pytest.raises(UnknownKeyVersion):
        reloaded.pseudonym_key_created_at(old_id)
    with pytest.raises(UnknownKeyVersion):
        keyring.retire_pseudonym_key(old_id)
    assert json.loads(keyring.path.read_text())["pseudonym"]["retired"][0]["version"] == old_id


def test_a_ring_from_before_pseudonym_versions_loads_its_key_as_version_1(
    keyring: FileKeyRing,
) -> None:
    document = json.loads(keyring.path.read_text())
    legacy = document.pop("pseudonym")
    del document["audit_pseudonym_key"]
    legacy_key = legacy["keys"][legacy["current"]]["key"]
    document["pseudonym_key"] = legacy_key
    keyring.path.write_text(json.dumps(document))
    older = FileKeyRing.load(keyring.path)
    [(version, key)] = older.pseudonym_keys()
    assert version.startswith("ps-1-") and key == older.pseudonym_key()
    assert key == base64.b64decode(legacy_key)
    # the audit entries written before keep linking: their key is the legacy one
    assert older.audit_pseudonym_key() == key
    # every process loading the same file names the version alike
    assert FileKeyRing.load(keyring.path).current_pseudonym_key_id() == version
    # rotating persists the versioned layout; the first version stays readable
    new_id = older.rotate_pseudonym_key()
    again = FileKeyRing.load(keyring.path)
    assert [k for k, _ in again.pseudonym_keys()] == [new_id, version]
    assert dict(again.pseudonym_keys())[version] == key and again.audit_pseudonym_key() == key
    assert "pseudonym_key" not in json.loads(keyring.path.read_text())


def test_a_pseudonym_key_of_the_wrong_length_is_refused(keyring: FileKeyRing) -> None:
    document = json.loads(keyring.path.read_text())
    current = document["pseudonym"]["current"]
    document["pseudonym"]["keys"][current]["key"] = base64.b64encode(b"short").decode()
    keyring.path.write_text(json.dumps(document))
    with pytest.raises(KeyRingError, match="pseudonym key"):
        FileKeyRing.load(keyring.path)
