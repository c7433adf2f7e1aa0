"""The currency codes an event may name: ISO 4217 alphabetic codes.

Source: ISO 4217 "List One: Current currency & funds code list", as published by SIX Group, the
standard's maintenance agency (six-group.com, Financial information, Data standards), as of
2025. Vendored rather than taken from a package (pycountry carries it too): the list is short,
changes a few times a decade, and a runtime dependency for one frozenset is not worth it. Left
out on purpose: XTS (reserved for testing) and XXX (no currency at all). Codes withdrawn
recently but still found in CRM history (ANG, BGN, SLL, CUC, ZWL) are kept. When ISO adds a
code, add it here (a record in it goes to the DLQ as invalid_event until then, and can be
replayed). Checked on 2026-12-06 against pycountry 26.2.16's list: the same codes, plus XAD
(Arab Accounting Dinar), added then, and the five withdrawn ones kept above.
"""

from __future__ import annotations

_LIST_ONE = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN
BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP
ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK
JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK
MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN
PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB
TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG
XAD XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL
"""
ISO_4217: frozenset[str] = frozenset(_LIST_ONE.split())
