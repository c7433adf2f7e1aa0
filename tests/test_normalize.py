"""Identifier normalisation on messy real-world input, checked against Metrica's md5 vectors."""

from __future__ import annotations

import pytest

from metrica_bridge import normalize

# metrica-api.md §13, verified test vectors.
MD5_EMAIL = "3c56ff8fef0f6c65b36b2d25720fe276"  # md5("mail@yandex.ru")
MD5_PHONE = "f09f2c3d48f31e2a802944ade2e5aec5"  # md5("79995551111")

RUSSIAN_MOBILE = [
    "+7 (999) 555-11-11",
    "8 999 555 11 11",
    "8(999)5551111",
    "9995551111",
    "0079995551111",
    "79995551111",
    "+79995551111",
    " +7-999-555-11-11\t",
    "8-999-555-11-11",
    "+7 999 555 1111\n",
    "tel:+79995551111",
    "(+7) 999 555 11 11",
    "\ufeff+7 999 555-11-11",  # a BOM from a CSV export
    "8\u00a0999\u00a0555\u00a011\u00a011",  # non-breaking spaces
]


def test_md5_vectors() -> None:
    assert normalize.md5_hex("mail@yandex.ru") == MD5_EMAIL
    assert normalize.md5_hex("79995551111") == MD5_PHONE


@pytest.mark.parametrize("raw", RUSSIAN_MOBILE)
def test_russian_mobile_in_any_notation(raw: str) -> None:
    normalised = normalize.phone(raw)
    assert normalised == "79995551111"
    assert normalize.md5_hex(normalised) == MD5_PHONE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 650 253 0000", "16502530000"),  # an explicit + keeps its country code
        ("001 650 253 0000", "16502530000"),  # so does the international prefix 00
        ("+44 20 7946 0958", "442079460958"),
        ("+375 (29) 123-45-67", "375291234567"),
        ("8 800 555-35-35", "78005553535"),  # domestic toll-free
        ("+86 138 0013 8000", "8613800138000"),
        ("+7 999 555-11-11 доб. 123", "79995551111"),  # the extension is not the phone
        ("+1 650 253 0000 ext. 7", "16502530000"),
        ("+７ ９９９ ５５５ １１ １１", "79995551111"),  # full-width digits are still digits
    ],
)
def test_international_numbers(raw: str, expected: str) -> None:
    assert normalize.phone(raw) == expected


def test_national_numbers_are_read_in_the_default_region() -> None:
    assert normalize.phone("(650) 253-0000", region="US") == "16502530000"
    # Belarus writes national numbers with a trunk 8 too: never a Russian 7 in front.
    assert normalize.phone("80291234567") is None
    assert normalize.phone("80291234567", region="BY") == "375291234567"
    assert normalize.phone("8 029 123-45-67", region="by") == "375291234567"
    # An explicit country code wins over the region.
    assert normalize.phone("+7 999 555 11 11", region="BY") == "79995551111"


def test_the_default_region_is_set_once_and_checked() -> None:
    try:
        normalize.set_default_region("BY")
        assert normalize.phone("80291234567") == "375291234567"
    finally:
        normalize.set_default_region(normalize.DEFAULT_REGION)
    assert normalize.phone("80291234567") is None
    with pytest.raises(ValueError, match="not a region code"):
        normalize.set_default_region("XX")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "+",
        "нет телефона",
        "n/a",
        "555-11-11",  # no area code
        "8 999 555 11",  # a digit group lost
        "+1 650 253 000",  # 10 digits after an explicit +: too short for any country
        "+1 650 253 0000 0000",  # too long for the US
        "+8 999 555 11 11",  # there is no country code 8
        "+7 029 123 45 67",  # not a Russian number range
        "+1 650 253 0000 00000",  # 16 digits
        "1" * 40,
        "\ufeff+1 650 253 000",  # the BOM must not hide the explicit +
    ],
)
def test_garbage_is_not_a_phone(raw: str) -> None:
    assert normalize.phone(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        " Mail@Yandex.RU ",
        "mail@yandex.ru",
        "MAIL@YANDEX.RU",
        "\tmail@Yandex.ru\r\n",
        "\ufeffmail@yandex.ru",  # a BOM from a CSV export
        "mail@yandex.ru\u200b",  # a zero-width space from copy and paste
        "\u00a0mail@yandex.ru\u00a0",
    ],
)
def test_email_in_any_case_and_padding(raw: str) -> None:
    normalised = normalize.email(raw)
    assert normalised == "mail@yandex.ru"
    assert normalize.md5_hex(normalised) == MD5_EMAIL


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "mail",
        "mail@",
        "@yandex.ru",
        "mail@yandex",
        "mail@yandex.",
        "mail@yandex.ru.",
        "mail@@yandex.ru",
        "mail@ya@ndex.ru",
        "mail yandex.ru",
        "mail @yandex.ru",
        "Ivan <mail@yandex.ru>",
        "mail@yandex.ru, other@yandex.ru",
        "mail@.ru",
    ],
)
def test_invalid_emails(raw: str) -> None:
    assert normalize.email(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ivan@Почта.рф", "ivan@xn--80a1acny.xn--p1ai"),  # IDNA: the ASCII form of the domain
        ("info@пример.испытание", "info@xn--e1afmkfd.xn--80akhbyknj4f"),
        ("mail@Bücher.de", "mail@xn--bcher-kva.de"),
    ],
)
def test_internationalised_domains_become_ascii(raw: str, expected: str) -> None:
    assert normalize.email(raw) == expected


@pytest.mark.parametrize("raw", ["иван@mail.ru", "jörg@example.com", "почта@почта.рф"])
def test_a_local_part_that_is_not_ascii_is_not_an_email(raw: str) -> None:
    # Metrica takes Latin emails only (metrica-api.md §5): dropped, the rest of the contact kept.
    assert normalize.email(raw) is None


def test_email_keeps_the_local_part_as_written() -> None:
    # Extra md5 rules (Gmail dots, +suffix) are unconfirmed for CDP (metrica-api.md §13).
    assert normalize.email("Ivan.Petrov+crm@Gmail.com") == "ivan.petrov+crm@gmail.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" 1712345678901234567 ", "1712345678901234567"),
        ("1712345678901234567", "1712345678901234567"),
        ("\t171234567890\n", "171234567890"),
        ("1", "1"),
        ("18446744073709551615", "18446744073709551615"),  # 20 digits
        ("\ufeff1712345678901234567", "1712345678901234567"),
    ],
)
def test_client_ids(raw: str, expected: str) -> None:
    assert normalize.client_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "0",
        "000",
        "1.7e18",  # a ClientID that went through a float: precision is gone
        "1.712345678901235e+18",
        "1712345678901234567.0",
        "1712345678901234567a",
        "abc",
        "undefined",  # getClientID called without a callback (metrica-api.md §14)
        "null",
        "-1712345678901234567",
        "+1712345678901234567",
        "1712 3456 7890",
        "123456789012345678901",  # 21 digits
        "１７１２３４５６７８",  # full-width digits
        "١٧١٢٣٤",  # Arabic-Indic digits
    ],
)
def test_unusable_client_ids(raw: str) -> None:
    assert normalize.client_id(raw) is None


def test_unique_keeps_first_occurrence_order() -> None:
    assert normalize.unique(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    assert normalize.unique([]) == []


def test_messy_duplicates_collapse_after_normalising() -> None:
    phones = [normalize.phone(p) for p in RUSSIAN_MOBILE]
    assert normalize.unique([p for p in phones if p]) == ["79995551111"]
