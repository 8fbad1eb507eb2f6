"""`make run` on a machine where ports are taken, or on other ports (issue 15, item 8): a
taken port stops the start with a message naming the setting that moves it, and the
development realm's web-login redirect URIs follow REFERRAL_API_BASE_URL."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli import REALM_EXPORT, busy_ports, dev_realm, keycloak_environment
from services.settings import Settings

KEYCLOAK_START = Path(__file__).resolve().parents[2] / "deploy" / "keycloak" / "start.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _settings(tmp_path: Path, **ports: int) -> tuple[Settings, dict[str, str]]:
    api, keycloak, temporal, ui = (ports.get(k) or free_port() for k in ("api", "kc", "t", "ui"))
    management = ports.get("mgmt") or free_port()
    settings = Settings(
        environment="development",
        data_dir=tmp_path,
        api_port=api,
        api_base_url=f"http://127.0.0.1:{api}",
        keycloak_port=keycloak,
        temporal_address=f"127.0.0.1:{temporal}",
        temporal_ui_port=ui,
    )
    return settings, {"REFERRAL_KEYCLOAK_MANAGEMENT_PORT": str(management)}


def test_free_ports_give_no_message(tmp_path: Path) -> None:
    settings, env = _settings(tmp_path)
    assert busy_ports(settings, env) == []


@pytest.mark.parametrize(
    ("which", "setting"),
    [
        ("api", "REFERRAL_API_PORT="),
        ("kc", "REFERRAL_KEYCLOAK_PORT="),
        ("mgmt", "REFERRAL_KEYCLOAK_MANAGEMENT_PORT="),
        ("t", "REFERRAL_TEMPORAL_ADDRESS="),
        ("ui", "REFERRAL_TEMPORAL_UI_PORT="),
    ],
)
def test_a_taken_port_names_the_setting_that_moves_it(
    tmp_path: Path, listening: int, which: str, setting: str
) -> None:
    settings, env = _settings(tmp_path, **{which: listening})
    messages = busy_ports(settings, env)
    assert len(messages) == 1, messages
    assert f"port {listening} " in messages[0] and "already in use" in messages[0]
    assert setting in messages[0] and "make run" in messages[0]
    if which == "api":  # the base URL moves with the port, or the login goes astray
        assert "REFERRAL_API_BASE_URL=http://127.0.0.1:" in messages[0]


def test_the_realm_follows_the_api_base_url(tmp_path: Path) -> None:
    realm = json.loads(dev_realm("http://127.0.0.1:8010"))
    web = next(c for c in realm["clients"] if c["clientId"] == "referral-web")
    assert web["redirectUris"] == ["http://127.0.0.1:8010/*"]
    assert web["webOrigins"] == ["http://127.0.0.1:8010"]
    assert web["rootUrl"] == "http://127.0.0.1:8010"
    assert web["attributes"]["post.logout.redirect.uris"] == "http://127.0.0.1:8010/*"
    assert "127.0.0.1:8000" not in json.dumps(realm)
    # everything else is the export, unchanged
    export = json.loads(REALM_EXPORT.read_text(encoding="utf-8"))
    assert json.loads(dev_realm("http://127.0.0.1:8000")) == export
    assert {u["username"] for u in realm["users"]} == {u["username"] for u in export["users"]}


@pytest.mark.parametrize(
    "bad", ["javascript:alert(1)", 'http://a"b', "http://x:1/?q=1", "ftp://x", "http://"]
)
def test_a_base_url_that_is_no_origin_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="REFERRAL_API_BASE_URL"):
        dev_realm(bad)


def test_make_run_hands_keycloak_the_realm_for_its_base_url(tmp_path: Path) -> None:
    settings, _ = _settings(tmp_path, api=8010)
    env = keycloak_environment(settings)
    assert env["REFERRAL_KEYCLOAK_PORT"] == str(settings.keycloak_port)
    written = Path(env["REFERRAL_KEYCLOAK_REALM_DIR"]) / REALM_EXPORT.name
    assert "http://127.0.0.1:8010/*" in written.read_text(encoding="utf-8")
    # and the start script imports from that folder
    assert '"${REFERRAL_KEYCLOAK_REALM_DIR:-$KC_DEPLOY_DIR/realm}"/*.json' in (
        KEYCLOAK_START.read_text(encoding="utf-8")
    )
