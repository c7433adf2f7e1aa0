"""Normalisation of contact identifiers to the forms Metrica matches on.

Rules (metrica-api.md §5, §13):

* Phone: digits only, with the country code (``79995551111``). Russian numbers are the
  default market, so an 11-digit number starting with ``8`` (the domestic trunk prefix) becomes
  ``7…`` and a bare 10-digit number gets ``7`` in front. A leading ``00`` (international
  dialling prefix) is dropped. Anything outside 11–15 digits afterwards is not a phone.
* Email: trimmed, lower-cased, one ``@`` with a dotted domain.
* ClientID: a digit string (never a float), 1–20 digits.

Functions return ``None`` for a value that cannot be normalised: callers drop it and count it,
they never log the raw value.
"""

from __future__ import annotations

import hashlib
import re

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# [0-9], not \d: \d also matches Arabic-Indic or full-width digits, which Metrica rejects.
_CLIENT_ID = re.compile(r"^[0-9]{1,20}$")
# Zero-width characters and the BOM ride along with values pasted or exported from
# spreadsheets; str.strip() keeps them, and they would change the md5.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
DEFAULT_COUNTRY_CODE = "7"


def phone(raw: str, default_country_code: str = DEFAULT_COUNTRY_CODE) -> str | None:
    raw = raw.translate(_INVISIBLE)
    digits = "".join(ch for ch in raw if ch.isdigit() and ch.isascii())
    explicit_plus = raw.strip().startswith("+")
    if not explicit_plus and digits.startswith("00"):
        digits, explicit_plus = digits[2:], True
    if not explicit_plus:
        if len(digits) == 11 and digits.startswith("8") and default_country_code == "7":
            digits = "7" + digits[1:]
        elif len(digits) == 10:
            digits = default_country_code + digits
    if not 11 <= len(digits) <= 15:
        return None
    return digits


def email(raw: str) -> str | None:
    value = raw.translate(_INVISIBLE).strip().lower()
    if not _EMAIL.match(value):
        return None
    return value


def client_id(raw: str) -> str | None:
    value = raw.translate(_INVISIBLE).strip()
    if not _CLIENT_ID.match(value) or int(value) == 0:
        return None
    return value


def md5_hex(normalised: str) -> str:
    """md5 of an already normalised identifier, lower-case hex, as Metrica expects."""
    return hashlib.md5(normalised.encode("utf-8"), usedforsecurity=False).hexdigest()


def unique(values: list[str]) -> list[str]:
    """Order-preserving de-duplication (Metrica treats identifiers as a set)."""
    return list(dict.fromkeys(values))
