"""The UI's catalogs are complete in the four languages, its templates compile, its
language negotiation follows Accept-Language, and its colours keep WCAG AA contrast."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.web import i18n
from api.web.labels import LABELS
from api.web.session import TEMPLATES, _env

PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def test_extraction_finds_the_templates_and_labels() -> None:
    ids = set(i18n.extract())
    assert len(ids) > 150, "extraction found too few messages: is it broken?"
    assert set(LABELS.values()) <= ids
    assert "Referrals of the office" in ids and "Verify now" in ids


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_message_is_translated(lang: str) -> None:
    catalog = i18n.catalog(lang)
    missing, fuzzy, placeholders = [], [], []
    for msgid in i18n.extract():
        message = catalog.get(msgid)
        if message is None or not message.string:
            missing.append(msgid)
            continue
        if message.fuzzy:
            fuzzy.append(msgid)
        if set(PLACEHOLDER.findall(str(message.string))) != set(PLACEHOLDER.findall(msgid)):
            placeholders.append(msgid)
    assert not missing, f"{lang}: untranslated (run `referral i18n`): {missing}"
    assert not fuzzy, f"{lang}: fuzzy: {fuzzy}"
    assert not placeholders, f"{lang}: placeholders differ: {placeholders}"


def test_translations_are_not_english_copies() -> None:
    """A catalog filled with the English text would pass the completeness check."""
    for lang in ("nl", "fr", "de"):
        catalog = i18n.catalog(lang)
        same = [m.id for m in catalog if m.id and m.string == m.id]
        assert len(same) < 15, f"{lang}: {len(same)} messages identical to English: {same}"


def test_the_translator_fills_placeholders_and_falls_back_to_the_id() -> None:
    t = i18n.Translator("en")
    assert t("%(hours)s h %(minutes)s min left", hours=3, minutes=5) == "3 h 5 min left"
    assert t("no such message") == "no such message"
    assert i18n.Translator("xx").lang == i18n.DEFAULT_LANGUAGE


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "nl"),
        ("", "nl"),
        ("fr-BE,fr;q=0.9,en;q=0.8", "fr"),
        ("en-GB, en;q=0.9, nl;q=0.95", "en"),
        ("es, de;q=0.5, fr;q=0.4", "de"),
        ("de;q=0.1, nl;q=0.9", "nl"),
        ("es, it", "nl"),
        ("fr;q=bogus, en", "en"),
        ("*", "nl"),
    ],
)
def test_language_negotiation(header: str | None, expected: str) -> None:
    assert i18n.negotiate(header) == expected


def test_every_template_compiles() -> None:
    names = [p.name for p in Path(TEMPLATES).glob("*.html")]
    assert len(names) >= 10
    for name in names:
        _env.get_template(name)


# ---- contrast (WCAG 2.2 AA: 4.5:1 for text) --------------------------------------------


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_text_colours_keep_aa_contrast() -> None:
    css = (Path(TEMPLATES).parent / "static" / "app.css").read_text()
    var = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", css))
    pairs = [
        ("ink", "paper"),
        ("muted", "paper"),
        ("accent", "paper"),
        ("accent-ink", "accent"),
        ("ok", "paper"),
        ("bad", "paper"),
    ]
    for fg, bg in pairs:
        assert contrast(var[fg], var[bg]) >= 4.5, (fg, bg, round(contrast(var[fg], var[bg]), 2))
    # text on the tinted boxes and table heads
    for tint in ("#eaf4ec", "#fbeceb", "#eef2f6", "#f4f6f8"):
        assert tint in css
        for fg in ("ink", "muted", "bad", "ok", "accent"):
            assert contrast(var[fg], tint) >= 4.5, (fg, tint)
    # the focus ring stands out against the header (3:1 for non-text)
    assert contrast(var["focus"], var["accent"]) >= 3
