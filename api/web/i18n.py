"""The UI's languages: Babel catalogs (`api/web/locale/<lang>/LC_MESSAGES/web.po`, read at
run time, no build step), the user's choice (a cookie) else `Accept-Language`.

`referral i18n` extracts the messages of the templates and of the UI's Python modules
(`N_`) and merges them into the four catalogs (new entries are empty until translated;
the completeness test fails on any empty or fuzzy entry).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

LANGUAGES = ("nl", "fr", "de", "en")
LANGUAGE_NAMES = {"nl": "Nederlands", "fr": "Français", "de": "Deutsch", "en": "English"}
DEFAULT_LANGUAGE = "nl"
LANGUAGE_COOKIE = "referral_lang"
WEB_DIR = Path(__file__).parent
LOCALE_DIR = WEB_DIR / "locale"
METHOD_MAP = [("templates/**.html", "jinja2"), ("**.py", "python")]
KEYWORDS = {"_": None, "N_": None}


def catalog_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / "web.po"


@lru_cache
def catalog(lang: str) -> Catalog:
    """One language's catalog, read once."""
    with catalog_path(lang).open("rb") as handle:
        return read_po(handle, locale=lang)


class Translator:
    """`gettext` for one language, with `%(name)s` placeholders filled from keywords."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
        self._catalog = catalog(self.lang)

    def __call__(self, msgid: str, **values: Any) -> str:
        message = self._catalog.get(msgid)
        text = str(message.string) if message is not None and message.string else msgid
        if message is not None and message.fuzzy:
            text = msgid
        return text % values if values else text


def negotiate(accept_language: str | None) -> str:
    """The best of our languages for an `Accept-Language` header (RFC 9110 weights)."""
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for position, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        # earlier entries win ties, as the header lists preferences in order
        quality -= position * 1e-6
        if primary in LANGUAGES and quality > best_q:
            best, best_q = primary, quality
    return best


def extract() -> list[str]:
    """Every message id the UI uses, in a stable order."""
    found: dict[str, None] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(WEB_DIR),
        method_map=METHOD_MAP,
        keywords=KEYWORDS,
        options_map={"templates/**.html": {"extensions": "jinja2.ext.i18n"}},
    ):
        if isinstance(message, str) and message:
            found[message] = None
    return list(found)


def update_catalogs() -> dict[str, list[str]]:
    """Merge the extracted ids into the four catalogs; returns each language's missing ids."""
    ids = extract()
    missing: dict[str, list[str]] = {}
    for lang in LANGUAGES:
        path = catalog_path(lang)
        old = catalog(lang) if path.exists() else Catalog(locale=lang)
        new = Catalog(locale=lang, project="referral-engine web UI", fuzzy=False)
        for msgid in ids:
            previous = old.get(msgid)
            text = str(previous.string) if previous is not None and previous.string else ""
            if lang == "en" and not text:
                text = msgid
            new.add(msgid, text)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            write_po(handle, new, width=100, omit_header=False, sort_output=False)
        missing[lang] = [m for m in ids if not (new.get(m) and new[m].string)]
    catalog.cache_clear()
    return missing
