"""The policy set parses, validates against the schema, and refuses to load when broken."""

from __future__ import annotations

import shutil
from pathlib import Path

import cedarpy
import pytest

from services.policy import ENGINE, POLICY_DIR, PolicyConfigurationError, load_engine

POLICY_FILES = (
    "tenancy.cedar",
    "lifecycle.cedar",
    "disclosure.cedar",
    "audit.cedar",
    "operations.cedar",
)


def test_policies_validate_against_the_schema() -> None:
    schema = (POLICY_DIR / "schema.cedarschema").read_text()
    text = "".join((POLICY_DIR / name).read_text() for name in POLICY_FILES)
    result = cedarpy.validate_policies(text, schema)
    assert result.validation_passed, [str(e) for e in result.errors]


def test_every_policy_has_a_readable_stable_id() -> None:
    ids = list(ENGINE.annotations)
    assert len(ids) == len(ENGINE.ids) == len(set(ids))
    concerns = {pid.split(".", 1)[0] for pid in ids}
    assert concerns == {"tenancy", "lifecycle", "disclosure", "audit", "operations"}
    for pid in ids:
        assert pid == pid.lower() and " " not in pid


def test_every_policy_file_is_loaded() -> None:
    for name in POLICY_FILES:
        for line in (POLICY_DIR / name).read_text().splitlines():
            if line.startswith("@id("):
                assert line.removeprefix('@id("').removesuffix('")') in ENGINE.annotations


def test_every_policy_id_appears_in_the_readme() -> None:
    readme = (POLICY_DIR / "README.md").read_text()
    missing = [pid for pid in ENGINE.annotations if pid not in readme]
    assert not missing


def _copy_policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    return target


def test_a_policy_that_does_not_validate_stops_loading(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    with (target / "lifecycle.cedar").open("a") as handle:
        handle.write('@id("x.bad")\npermit (principal, action, resource)\n')
        handle.write("when { principal.no_such_attribute == 1 };\n")
    with pytest.raises(PolicyConfigurationError, match="do not validate"):
        load_engine(target)


def test_a_policy_without_id_stops_loading(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    with (target / "audit.cedar").open("a") as handle:
        handle.write(
            'permit (principal, action == Referral::Action::"explain_policy", resource);\n'
        )
    with pytest.raises(PolicyConfigurationError, match="no @id"):
        load_engine(target)


def test_two_policies_with_one_id_stop_loading(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    with (target / "audit.cedar").open("a") as handle:
        handle.write('@id("audit.permit-explain-policy")\n')
        handle.write(
            'forbid (principal, action == Referral::Action::"explain_policy", resource);\n'
        )
    with pytest.raises(PolicyConfigurationError, match="share the @id"):
        load_engine(target)


def test_a_syntax_error_stops_loading(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    (target / "tenancy.cedar").write_text('@id("x") permit (principal, action, resource')
    with pytest.raises(PolicyConfigurationError, match="do not parse"):
        load_engine(target)


def test_no_policies_stops_loading(tmp_path: Path) -> None:
    with pytest.raises(PolicyConfigurationError):
        load_engine(tmp_path)
