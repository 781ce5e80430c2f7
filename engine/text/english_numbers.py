"""Numbers, money, times and ordinals in English text written out as words.

Spelled the way GPT-SoVITS v2's English front end spells them, since its
models were trained on that text: hyphenated tens ("forty-two"), no "and"
after hundreds, a comma between thousands groups ("twelve thousand, three
hundred"), years from 1001 to 2999 read in pairs ("nineteen ninety-nine",
"two thousand five"), cents and pence after "and", decimals digit by digit.
Clock times are read as "four thirty", "seven o'clock", "nine oh five" (upstream
adds an "a.m."/"p.m." guessed from the hour; that is left out here).
Pure functions; safe anywhere.
"""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ["", "thousand", "million", "billion", "trillion", "quadrillion"]
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip

_ORDINAL_LIST = re.compile(r"\b([0-9]+)\. ")
_THOUSANDS_COMMAS = re.compile(r"([0-9][0-9,]+[0-9])")
_TIME = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b")
_POUNDS = re.compile(r"£([0-9.,]*[0-9]+)|([0-9.,]*[0-9]+)£")
_DOLLARS = re.compile(r"\$([0-9.,]*[0-9]+)|([0-9.,]*[0-9]+)\$")
_DECIMAL = re.compile(r"([0-9]+\.\s*[0-9]+)")
_FRACTION = re.compile(r"([0-9]+)/([0-9]+)")
_ORDINAL = re.compile(r"([0-9]+)(st|nd|rd|th)\b")
_NEGATIVE = re.compile(r"(?:^|(?<=\s))-(?=[0-9])")
_INTEGER = re.compile(r"[0-9]+")


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    words = [f"{_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        words.append(_TENS[rest // 10] + (f"-{_ONES[rest % 10]}" if rest % 10 else ""))
    elif rest or not hundreds:
        words.append(_ONES[rest])
    return " ".join(words)


def cardinal(n: int) -> str:
    """``12345`` → ``twelve thousand, three hundred forty-five``."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 1000:
        return _below_thousand(n)
    groups = []
    scale = 0
    while n:
        n, group = divmod(n, 1000)
        if group:
            if scale >= len(_SCALES):
                return " ".join(_ONES[int(d)] for d in str(n * 1000 + group))
            groups.append(_below_thousand(group) + (f" {_SCALES[scale]}" if scale else ""))
        scale += 1
    return ", ".join(reversed(groups))


def ordinal(n: int) -> str:
    """``21`` → ``twenty-first``."""
    words = cardinal(n)
    head, sep, last = words.rpartition("-") if "-" in words.rsplit(" ", 1)[-1] else words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def year_or_cardinal(n: int) -> str:
    """Numbers from 1001 to 2999 are read as years; everything else as a plain cardinal."""
    if 1000 < n < 3000:
        if n == 2000:
            return "two thousand"
        if 2000 < n < 2010:
            return "two thousand " + cardinal(n % 100)
        if n % 100 == 0:
            return cardinal(n // 100) + " hundred"
        high, low = divmod(n, 100)
        return cardinal(high) + " " + ("oh " + cardinal(low) if low < 10 else cardinal(low))
    return cardinal(n)


def _money(amount: str, unit: tuple[str, str], sub: tuple[str, str]) -> str:
    parts = amount.split(".")
    if len(parts) > 2:
        return f"{amount} {unit[1]}"
    whole = int(parts[0].replace(",", "")) if parts[0].replace(",", "") else 0
    fraction = int(parts[1].ljust(2, "0")[:2]) if len(parts) > 1 and parts[1] else 0
    said = []
    if whole:
        said.append(f"{whole} {unit[0] if whole == 1 else unit[1]}")
    if fraction:
        said.append(f"{fraction} {sub[0] if fraction == 1 else sub[1]}")
    return " and ".join(said) if said else f"zero {unit[1]}"


def _time(m: re.Match[str]) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    if hours > 12:
        hours -= 12
    if minutes == 0:
        return f"{cardinal(hours)} o'clock"
    if minutes < 10:
        return f"{cardinal(hours)} oh {cardinal(minutes)}"
    return f"{cardinal(hours)} {cardinal(minutes)}"


def _fraction(m: re.Match[str]) -> str:
    top, bottom = int(m.group(1)), int(m.group(2))
    if bottom == 1:
        return cardinal(top)
    if bottom == 2:
        return f"{cardinal(top)} {'half' if top == 1 else 'halves'}"
    if bottom == 0:
        return f"{cardinal(top)} over zero"
    return f"{cardinal(top)} {ordinal(bottom)}{'s' if top > 1 else ''}"


def _decimal(m: re.Match[str]) -> str:
    whole, digits = re.split(r"\.\s*", m.group(1), maxsplit=1)
    return whole + " point " + " ".join(digits)


def expand_numbers(text: str) -> str:
    """Write out every number in ``text`` (see the module docstring)."""
    text = _ORDINAL_LIST.sub(lambda m: ordinal(int(m.group(1))) + ", ", text)
    text = _NEGATIVE.sub("negative ", text)
    text = _THOUSANDS_COMMAS.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _TIME.sub(_time, text)
    text = _POUNDS.sub(lambda m: _money(m.group(1) or m.group(2), ("pound", "pounds"), ("penny", "pence")), text)
    text = _DOLLARS.sub(lambda m: _money(m.group(1) or m.group(2), ("dollar", "dollars"), ("cent", "cents")), text)
    text = _DECIMAL.sub(_decimal, text)
    text = _FRACTION.sub(_fraction, text)
    text = _ORDINAL.sub(lambda m: ordinal(int(m.group(1))), text)
    return _INTEGER.sub(lambda m: year_or_cardinal(int(m.group(0))), text)
