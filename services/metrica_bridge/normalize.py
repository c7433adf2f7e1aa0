"""Normalisation of contact identifiers to the forms Metrica matches on.

Rules (metrica-api.md §5, §13):

* Phone: E.164 digits with the country code, no ``+`` (``79995551111``), parsed by
  ``phonenumbers`` (Google's libphonenumber metadata) in the default region
  (``PHONE_DEFAULT_REGION``, RU): a national number is read the way that country writes it
  (``8 029 123-45-67`` is Belarusian with region BY and not a phone with region RU, never
  ``70291234567``), an extension is dropped, a leading ``00`` is the international prefix, and
  only numbers valid for their country are kept.
* Email: trimmed and lower-cased, one ``@`` with a dotted domain; Metrica takes Latin emails
  only, so an internationalised domain becomes its ASCII (IDNA, punycode) form and an address
  still not ASCII (a Cyrillic local part) is not an email.
* ClientID: a digit string (never a float), 1–20 digits.

Functions return ``None`` for a value that cannot be normalised: callers drop it and count it,
they never log the raw value. One bad identifier costs that identifier only.
"""

from __future__ import annotations

import hashlib
import re

import idna
import phonenumbers

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# [0-9], not \d: \d also matches Arabic-Indic or full-width digits, which Metrica rejects.
_CLIENT_ID = re.compile(r"^[0-9]{1,20}$")
# Zero-width characters and the BOM ride along with values pasted or exported from
# spreadsheets; str.strip() keeps them, and they would change the md5.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
DEFAULT_REGION = "RU"
_region = DEFAULT_REGION


def set_default_region(region: str) -> None:
    """The region national phone numbers are read in (``PHONE_DEFAULT_REGION``); the service
    sets it once from its settings, before any event is parsed."""
    global _region
    _region = check_region(region)


def check_region(region: str) -> str:
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{region!r} is not a region code phonenumbers knows (ISO 3166, e.g. RU)")
    return code


def phone(raw: str, region: str | None = None) -> str | None:
    value = raw.translate(_INVISIBLE).strip()
    if value.startswith("00"):
        value = "+" + value[2:]  # the international prefix of most countries, not RU's 8~10
    try:
        number = phonenumbers.parse(value, (region or _region).upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def email(raw: str) -> str | None:
    value = raw.translate(_INVISIBLE).strip().lower()
    if not _EMAIL.match(value):
        return None
    local, _, domain = value.rpartition("@")
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError:
            return None
    if not local.isascii():
        return None
    return f"{local}@{domain}"


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
