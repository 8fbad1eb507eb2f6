"""Keyed pseudonyms: stable, keyed, normalised and non-reversible."""

from __future__ import annotations

import os
import re
import uuid
from datetime import date

import pytest

from services.crypto import FileKeyRing, Pseudonymizer

KEY = b"k" * 32  # a fixed test key keeps expected values reproducible across runs


@pytest.fixture
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(KEY)


def test_national_numbers_are_stable_and_keyed(pseudonymizer: Pseudonymizer) -> None:
    value = pseudonymizer.national_number("91.04.17-123.45")
    assert re.fullmatch(r"nn_[0-9a-f]{32}", value)
    assert Pseudonymizer(KEY).national_number("91.04.17-123.45") == value
    assert Pseudonymizer(os.urandom(32)).national_number("91.04.17-123.45") != value
    assert "91041712345" not in value


@pytest.mark.parametrize(
    "written", ["91041712345", "91.04.17-123.45", " 910417 123 45 ", "９１０４１７１２３４５"]
)
def test_national_numbers_ignore_formatting(pseudonymizer: Pseudonymizer, written: str) -> None:
    assert pseudonymizer.national_number(written) == pseudonymizer.national_number("91041712345")


def test_different_national_numbers_differ(pseudonymizer: Pseudonymizer) -> None:
    assert pseudonymizer.national_number("91041712345") != pseudonymizer.national_number(
        "91041712346"
    )


def test_a_national_number_needs_digits(pseudonymizer: Pseudonymizer) -> None:
    with pytest.raises(ValueError):
        pseudonymizer.national_number(" - . ")


@pytest.mark.parametrize(
    "written",
    [
        "Amélie Dubois-Lefèvre",
        "AMELIE DUBOIS LEFEVRE",
        "  amélie   dubois-lefèvre ",
        "Ａmelie Dubois Lefevre",
    ],
)
def test_names_ignore_case_accents_and_spacing(pseudonymizer: Pseudonymizer, written: str) -> None:
    birth = date(1991, 4, 17)
    expected = pseudonymizer.name_and_birth_date("amelie dubois lefevre", birth)
    assert pseudonymizer.name_and_birth_date(written, birth) == expected
    assert re.fullmatch(r"nb_[0-9a-f]{32}", expected)


def test_names_distinguish_people(pseudonymizer: Pseudonymizer) -> None:
    birth = date(1991, 4, 17)
    base = pseudonymizer.name_and_birth_date("Amélie Dubois", birth)
    assert pseudonymizer.name_and_birth_date("Amélie Dubois", date(1991, 4, 18)) != base
    assert pseudonymizer.name_and_birth_date("Amélie Dupont", birth) != base
    assert Pseudonymizer(os.urandom(32)).name_and_birth_date("Amélie Dubois", birth) != base


def test_an_empty_name_is_refused(pseudonymizer: Pseudonymizer) -> None:
    with pytest.raises(ValueError):
        pseudonymizer.name_and_birth_date(" - ", date(1991, 4, 17))


def test_referral_pseudonyms_are_short_stable_and_keyed(pseudonymizer: Pseudonymizer) -> None:
    referral = uuid.uuid4()
    value = pseudonymizer.referral_pseudonym(referral)
    assert re.fullmatch(r"ref_[0-9a-f]{20}", value)
    assert pseudonymizer.referral_pseudonym(referral) == value
    assert pseudonymizer.referral_pseudonym(uuid.uuid4()) != value
    assert Pseudonymizer(os.urandom(32)).referral_pseudonym(referral) != value
    assert referral.hex[:20] not in value


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        Pseudonymizer(b"too short")


def test_the_key_ring_provides_the_key(keyring: FileKeyRing) -> None:
    reloaded = FileKeyRing.load(keyring.path)
    assert Pseudonymizer(keyring.pseudonym_key()).national_number("1") == Pseudonymizer(
        reloaded.pseudonym_key()
    ).national_number("1")
