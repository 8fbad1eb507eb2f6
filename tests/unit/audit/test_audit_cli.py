"""`referral audit` end to end on a migrated database: export, verify, rotate, witness, monitor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_factories import audit_event, rebuild_stored_tree, triggers_disabled
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update
from typer.testing import CliRunner

from api.cli import app as cli
from services.audit.keys import key_id_of
from services.audit.log import AuditLog
from services.audit.models import AUDIT_ENTRY_TABLE, AuditEntry, compute_leaf_hash
from services.audit.offline import public_key_pem
from services.db import make_engine, migrate
from services.runtime import Runtime, load_audit_keys, load_keyring
from services.settings import Environment, get_settings

runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A migrated SQLite database and a data directory the CLI's settings point at."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrate(url)
    monkeypatch.setenv("REFERRAL_DATABASE_URL", url)
    monkeypatch.setenv("REFERRAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REFERRAL_KEYRING_PATH", str(tmp_path / "data" / "keyring.json"))
    monkeypatch.setenv("REFERRAL_ENVIRONMENT", "test")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def append(count: int, start: int = 0) -> None:
    """Audit entries written as the API would (its own process, its own runtime)."""
    runtime = Runtime.build(get_settings())
    try:
        runtime.audit.append([audit_event(n) for n in range(start, start + count)])
    finally:
        runtime.close()


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(cli, ["audit", *args])
    assert result.exit_code == code, result.output
    return result.output


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_export_verify_trusted_head_and_key_rotation(cli_env: Path) -> None:
    append(5)
    keys = write(cli_env / "keys.pem", run("public-key"))
    first = cli_env / "first.jsonl"
    assert "exported 5 entries" in run("export", "--out", str(first))
    kept = cli_env / "kept.json"
    output = run("verify", str(first), "--public-key", str(keys), "--save-head", str(kept))
    assert "covers entries 0..4, 5 new from 0" in output
    assert "intact: 5 entries, all covered by 1 verified signed tree heads" in output
    assert json.loads(kept.read_text())["tree_size"] == 5

    # The key rotates on its own; the auditor keeps only the key(s) fetched before.
    keyring = (cli_env / "data" / "keyring.json").read_bytes()
    assert "new audit signing key: ed25519:" in run("rotate-key")
    assert (cli_env / "data" / "keyring.json").read_bytes() == keyring  # data keys untouched
    append(3, start=5)
    second = cli_env / "second.jsonl"
    run("export", "--out", str(second))
    output = run("verify", str(second), "--public-key", str(keys), "--trusted-head", str(kept))
    # entry 5 records the first export itself (IHE BALP export), then the 3 appended
    assert "covers entries 0..8, 4 new from 5" in output
    exported = json.loads(
        next(line for line in second.read_text().splitlines() if '"index":5,' in line)
    )
    assert (exported["event_type"], exported["action"], exported["outcome"]) == (
        "export",
        "audit.export",
        "success",
    )
    assert exported["actor_subject"].startswith("os:") and exported["source_node"]
    assert "consistent with the trusted head" in output
    signers = {
        line.split("(key ")[1].split(")")[0] for line in output.splitlines() if "(key " in line
    }
    assert len(signers) == 2  # the heads before and after the rotation

    # The first export is a truncation of the log the second head vouches for (an
    # auditor who fetched both keys after the rotation checks it).
    keys = write(cli_env / "keys-now.pem", run("public-key"))
    assert keys.read_text().count("BEGIN PUBLIC KEY") == 2
    newer = write(
        cli_env / "newer.json", json.dumps(json.loads(second.read_text().splitlines()[-1]))
    )
    output = run(
        "verify", str(first), "--public-key", str(keys), "--trusted-head", str(newer), code=1
    )
    assert (
        "TAMPERED: first bad entry index 5: the export ends at size 5, before the trusted "
        "head at size 9"
    ) in output

    # Without its heads nothing is vouched for.
    headless = write(
        cli_env / "headless.jsonl",
        "".join(
            line + "\n" for line in first.read_text().splitlines() if '"tree_head"' not in line
        ),
    )
    output = run("verify", str(headless), "--public-key", str(keys), code=1)
    assert "entries 0..4 are not covered: no signed tree head" in output

    # A key the auditor never trusted is named as unknown.
    stranger = write(cli_env / "stranger.pem", public_key_pem(Ed25519PrivateKey.generate()))
    output = run("verify", str(first), "--public-key", str(stranger), code=1)
    assert "is signed by unknown key" in output


def test_witness_and_monitor_follow_the_log_and_raise_the_alarm(cli_env: Path) -> None:
    append(4)
    keys = write(cli_env / "keys.pem", run("public-key"))
    witness_key, witness_state = cli_env / "witness.json", cli_env / "witness-state.json"
    witness_pem = write(cli_env / "witness.pem", run("witness-key", "--out", str(witness_key)))
    other_pem = write(cli_env / "other.pem", public_key_pem(Ed25519PrivateKey.generate()))
    monitor_state = cli_env / "monitor-state.json"
    witness = ["witness", "--key", str(witness_key), "--state", str(witness_state)]
    witness += ["--log-public-key", str(keys)]
    monitor = ["monitor", "--state", str(monitor_state), "--public-key", str(keys)]

    run("export", "--out", str(cli_env / "a.jsonl"))  # signs the head at 4
    assert "cosigned the tree head at size 4" in run(*witness)
    assert "consistent: tree head at size 4 extends nothing" in run(*monitor)
    append(3, start=4)  # entries 5..7 (entry 4 records the export)
    out = cli_env / "b.jsonl"
    run("export", "--out", str(out))
    assert "cosigned the tree head at size 8" in run(*witness)
    assert "consistent: tree head at size 8 extends size 4" in run(*monitor)

    out = cli_env / "c.jsonl"
    run("export", "--out", str(out))
    verify = ["verify", str(out), "--public-key", str(keys), "--witness-key", str(witness_pem)]
    output = run(*verify, "--min-witnesses", "1")
    assert "tree head at size 8" in output and "cosigned by 1 witness(es)" in output
    output = run(*verify, "--witness-key", str(other_pem), "--min-witnesses", "2", code=1)
    assert "no tree head carries 2 valid witness cosignature(s)" in output

    # Whoever holds the database and the log's key rewrites entry 2 and signs on.
    runtime = Runtime.build(get_settings())
    try:
        with triggers_disabled(runtime.engine), runtime.engine.begin() as conn:
            row = conn.execute(
                AUDIT_ENTRY_TABLE.select().where(AUDIT_ENTRY_TABLE.c.index == 2)
            ).one()
            entry = AuditEntry(**row._mapping)
            entry.actor_subject = "nobody"
            conn.execute(
                update(AUDIT_ENTRY_TABLE)
                .where(AUDIT_ENTRY_TABLE.c.index == 2)
                .values(actor_subject="nobody", leaf_hash=compute_leaf_hash(entry).hex())
            )
            rebuild_stored_tree(conn)  # or the log would sign on over the original tree
    finally:
        runtime.close()
    append(1, start=7)
    # a validly signed head at 11 (the exports b and c recorded as entries 8 and 9)
    run("export", "--out", str(cli_env / "d.jsonl"))
    alarm = run(*monitor, code=2)
    assert alarm.startswith(
        "ALARM: the tree head at size 11 is not consistent with the head at size 8"
    )
    refused = run(*witness, code=2)
    assert refused.startswith("REFUSED: the tree head at size 11 is not consistent")
    # neither moved on: the next run still compares with the last good head
    assert json.loads(monitor_state.read_text())["last_head"]["tree_size"] == 8
    assert json.loads(witness_state.read_text())["last_head"]["tree_size"] == 8


def test_a_running_process_signs_with_the_rotated_key(cli_env: Path) -> None:
    runtime = Runtime.build(get_settings())
    try:
        runtime.audit.append([audit_event(0)])
        before = runtime.audit.sign_tree_head().key_id
        run("rotate-key")  # another process
        runtime.audit.append([audit_event(1)])
        after = runtime.audit.sign_tree_head()
        assert after.key_id != before and after.key_id == runtime.audit_keys.current()[0]
        assert runtime.audit.verify().ok
    finally:
        runtime.close()


def test_the_audit_key_leaves_the_key_ring(cli_env: Path) -> None:
    # A log the key ring's audit key signed keeps verifying: that key starts the chain
    # and endorses the new one. A new log does not trust the key ring's key at all.
    settings = get_settings()
    keyring = load_keyring(settings)
    legacy = keyring.audit_signing_key()
    engine = make_engine(settings.database_url)
    try:
        old = AuditLog(engine, legacy, key_id_of(legacy))
        old.append([audit_event(0)])
        old.sign_tree_head()
    finally:
        engine.dispose()
    runtime = Runtime.build(settings)
    try:
        chain = [key.key_id for key in runtime.audit_keys.chain()]
        assert chain[0] == key_id_of(legacy) and runtime.audit_keys.key_id != chain[0]
        runtime.audit.append([audit_event(1)])
        runtime.audit.sign_tree_head()
        assert runtime.audit.verify().ok
    finally:
        runtime.close()
    # an auditor who kept only the key ring's key (what `public-key` printed before)
    # follows its endorsement of the new key
    out = cli_env / "export.jsonl"
    run("export", "--out", str(out))
    legacy_pem = write(cli_env / "legacy.pem", public_key_pem(legacy))
    output = run("verify", str(out), "--public-key", str(legacy_pem))
    assert f"(key {key_id_of(legacy)})" in output and "intact: 2 entries" in output


def test_a_fresh_log_does_not_trust_the_key_ring_and_production_refuses_the_file(
    cli_env: Path,
) -> None:
    settings = get_settings()
    runtime = Runtime.build(settings)
    try:
        legacy = runtime.keyring.audit_signing_key()
        assert [k.key_id for k in runtime.audit_keys.chain()] == [runtime.audit_keys.key_id]
        assert runtime.audit_keys.key_id != key_id_of(legacy)
    finally:
        runtime.close()
    production = settings.model_copy(update={"environment": Environment.PRODUCTION})
    engine = make_engine(settings.database_url)
    try:
        with pytest.raises(RuntimeError, match="the file audit key is for development"):
            load_audit_keys(production, engine, runtime.keyring)
    finally:
        engine.dispose()


def test_verify_refuses_unreadable_inputs_without_a_traceback(tmp_path: Path) -> None:
    export = write(tmp_path / "export.jsonl", "")
    garbage = write(tmp_path / "garbage.pem", "not a key")
    result = runner.invoke(cli, ["audit", "verify", str(export), "--public-key", str(garbage)])
    assert result.exit_code == 2
    assert "holds no readable Ed25519 public key" in result.output
    key = write(tmp_path / "key.pem", public_key_pem(Ed25519PrivateKey.generate()))
    missing = tmp_path / "missing.jsonl"
    result = runner.invoke(cli, ["audit", "verify", str(missing), "--public-key", str(key)])
    assert result.exit_code == 2
    assert "no export at" in result.output
