"""Format a datetime with a Go reference-time layout (``Mon Jan 2 15:04:05 -0700 MST 2006``).

The reference's time service was written in Go, so its users wrote layouts such as
``15:04 Jan 2`` or ``2006-01-02T15:04:05Z07:00``. This is a faithful port of Go's
``time.Time.Format``: the layout is split into chunks exactly as Go's ``nextStdChunk``
does (same precedence, same "Jan followed by a lowercase letter is literal" rule, same
``_2006`` special case, fractional seconds with ``.`` or ``,``), and each element is
rendered as Go's ``appendFormat`` renders it. Anything that is not an element is copied
literally.

Elements: 2006 06 | January Jan 1 01 | Monday Mon | 2 _2 02 | __2 002 (day of year) |
15 3 03 | 4 04 | 5 05 | PM pm | MST | -0700 -07:00 -07 -070000 -07:00:00 |
Z0700 Z07:00 Z07 Z070000 Z07:00:00 (``Z`` for UTC) | .000 .999 ,000 ,999 (1-9 digits).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

REFERENCE = "Mon Jan 2 15:04:05 -0700 MST 2006"

_LONG_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class Std(enum.Enum):
    LONG_MONTH = "January"
    MONTH = "Jan"
    NUM_MONTH = "1"
    ZERO_MONTH = "01"
    LONG_WEEKDAY = "Monday"
    WEEKDAY = "Mon"
    DAY = "2"
    UNDER_DAY = "_2"
    ZERO_DAY = "02"
    UNDER_YEAR_DAY = "__2"
    ZERO_YEAR_DAY = "002"
    HOUR = "15"
    HOUR12 = "3"
    ZERO_HOUR12 = "03"
    MINUTE = "4"
    ZERO_MINUTE = "04"
    SECOND = "5"
    ZERO_SECOND = "05"
    LONG_YEAR = "2006"
    YEAR = "06"
    PM = "PM"
    LOWER_PM = "pm"
    TZ = "MST"
    ISO8601_TZ = "Z0700"
    ISO8601_SECONDS_TZ = "Z070000"
    ISO8601_SHORT_TZ = "Z07"
    ISO8601_COLON_TZ = "Z07:00"
    ISO8601_COLON_SECONDS_TZ = "Z07:00:00"
    NUM_TZ = "-0700"
    NUM_SECONDS_TZ = "-070000"
    NUM_SHORT_TZ = "-07"
    NUM_COLON_TZ = "-07:00"
    NUM_COLON_SECONDS_TZ = "-07:00:00"
    FRAC_SECOND0 = ".0"  # trailing zeros kept
    FRAC_SECOND9 = ".9"  # trailing zeros (and the separator, if nothing is left) dropped


# Go's std0x: "01".."06" in order.
_ZERO_X = (Std.ZERO_MONTH, Std.ZERO_DAY, Std.ZERO_HOUR12, Std.ZERO_MINUTE, Std.ZERO_SECOND,
           Std.YEAR)
# Longest first, as Go tries them.
_NUM_TZ = (("-070000", Std.NUM_SECONDS_TZ), ("-07:00:00", Std.NUM_COLON_SECONDS_TZ),
           ("-0700", Std.NUM_TZ), ("-07:00", Std.NUM_COLON_TZ), ("-07", Std.NUM_SHORT_TZ))
_ISO_TZ = (("Z070000", Std.ISO8601_SECONDS_TZ), ("Z07:00:00", Std.ISO8601_COLON_SECONDS_TZ),
           ("Z0700", Std.ISO8601_TZ), ("Z07:00", Std.ISO8601_COLON_TZ),
           ("Z07", Std.ISO8601_SHORT_TZ))
_ISO_KINDS = {Std.ISO8601_TZ, Std.ISO8601_SECONDS_TZ, Std.ISO8601_SHORT_TZ,
              Std.ISO8601_COLON_TZ, Std.ISO8601_COLON_SECONDS_TZ}
_COLON_KINDS = {Std.ISO8601_COLON_TZ, Std.NUM_COLON_TZ, Std.ISO8601_COLON_SECONDS_TZ,
                Std.NUM_COLON_SECONDS_TZ}
_SHORT_KINDS = {Std.NUM_SHORT_TZ, Std.ISO8601_SHORT_TZ}
_SECONDS_KINDS = {Std.ISO8601_SECONDS_TZ, Std.NUM_SECONDS_TZ, Std.NUM_COLON_SECONDS_TZ,
                  Std.ISO8601_COLON_SECONDS_TZ}


@dataclass(frozen=True)
class Element:
    """One layout element; ``digits`` and ``separator`` only matter for fractional seconds."""

    std: Std
    digits: int = 0
    separator: str = "."


Chunk = str | Element


def _lower_at(text: str, index: int) -> bool:
    return index < len(text) and "a" <= text[index] <= "z"


def _element_at(layout: str, i: int) -> tuple[Element, int] | None:
    """The element starting at ``layout[i]`` and its length, or None (Go's nextStdChunk)."""
    rest = layout[i:]
    c = layout[i]
    if c == "J" and rest.startswith("Jan"):
        if rest.startswith("January"):
            return Element(Std.LONG_MONTH), 7
        if not _lower_at(layout, i + 3):
            return Element(Std.MONTH), 3
    elif c == "M":
        if rest.startswith("Mon"):
            if rest.startswith("Monday"):
                return Element(Std.LONG_WEEKDAY), 6
            if not _lower_at(layout, i + 3):
                return Element(Std.WEEKDAY), 3
        if rest.startswith("MST"):
            return Element(Std.TZ), 3
    elif c == "0":
        if len(rest) >= 2 and "1" <= rest[1] <= "6":
            return Element(_ZERO_X[ord(rest[1]) - ord("1")]), 2
        if rest.startswith("002"):
            return Element(Std.ZERO_YEAR_DAY), 3
    elif c == "1":
        if rest.startswith("15"):
            return Element(Std.HOUR), 2
        return Element(Std.NUM_MONTH), 1
    elif c == "2":
        if rest.startswith("2006"):
            return Element(Std.LONG_YEAR), 4
        return Element(Std.DAY), 1
    elif c == "_":
        if rest.startswith("_2"):
            # "_2006" is a literal "_" then the year: handled by the caller (see _chunks).
            return Element(Std.UNDER_DAY), 2
        if rest.startswith("__2"):
            return Element(Std.UNDER_YEAR_DAY), 3
    elif c == "3":
        return Element(Std.HOUR12), 1
    elif c == "4":
        return Element(Std.MINUTE), 1
    elif c == "5":
        return Element(Std.SECOND), 1
    elif c == "P" and rest.startswith("PM"):
        return Element(Std.PM), 2
    elif c == "p" and rest.startswith("pm"):
        return Element(Std.LOWER_PM), 2
    elif c == "-":
        for text, std in _NUM_TZ:
            if rest.startswith(text):
                return Element(std), len(text)
    elif c == "Z":
        for text, std in _ISO_TZ:
            if rest.startswith(text):
                return Element(std), len(text)
    elif c in ".," and len(rest) >= 2 and rest[1] in "09":
        digit = rest[1]
        j = 1
        while j < len(rest) and rest[j] == digit:
            j += 1
        # Only a fractional second if the run of equal digits is not followed by a digit.
        if not (j < len(rest) and rest[j].isdigit()):
            std = Std.FRAC_SECOND0 if digit == "0" else Std.FRAC_SECOND9
            return Element(std, digits=j - 1, separator=c), j
    return None


def chunks(layout: str) -> Iterator[Chunk]:
    """Split ``layout`` into literal strings and elements, left to right, as Go does."""
    literal_start = 0
    i = 0
    while i < len(layout):
        if layout.startswith("_2006", i):
            # Go: "_2006 is really a literal _, followed by stdLongYear".
            if literal_start < i + 1:
                yield layout[literal_start:i + 1]
            yield Element(Std.LONG_YEAR)
            i += 5
            literal_start = i
            continue
        found = _element_at(layout, i)
        if found is None:
            i += 1
            continue
        element, length = found
        if literal_start < i:
            yield layout[literal_start:i]
        yield element
        i += length
        literal_start = i
    if literal_start < len(layout):
        yield layout[literal_start:]


def _pad(value: int, width: int) -> str:
    """Go's appendInt(b, x, width): zero padded, minus sign before the padding."""
    text = str(abs(value)).rjust(width, "0")
    return "-" + text if value < 0 else text


def _offset_seconds(moment: datetime) -> int:
    offset = moment.utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _zone(moment: datetime, element: Element) -> str:
    offset = _offset_seconds(moment)
    if offset == 0 and element.std in _ISO_KINDS:
        return "Z"
    absolute = abs(offset)
    minutes = absolute // 60
    sign = "-" if offset < 0 and minutes else "+"
    out = sign + _pad(minutes // 60, 2)
    if element.std in _COLON_KINDS:
        out += ":"
    if element.std not in _SHORT_KINDS:
        out += _pad(minutes % 60, 2)
    if element.std in _SECONDS_KINDS:
        if element.std in (Std.NUM_COLON_SECONDS_TZ, Std.ISO8601_COLON_SECONDS_TZ):
            out += ":"
        out += _pad(absolute % 60, 2)
    return out


def _zone_name(moment: datetime) -> str:
    """Go prints the zone's abbreviation, or -0700 style digits when it has none."""
    name = moment.tzname() if moment.tzinfo is not None else "UTC"
    if name and not name.startswith(("UTC+", "UTC-")) and name[0] not in "+-":
        return name
    offset = _offset_seconds(moment)
    minutes = abs(offset) // 60
    sign = "-" if offset < 0 and minutes else "+"
    return sign + _pad(minutes // 60, 2) + _pad(minutes % 60, 2)


def _fraction(moment: datetime, element: Element) -> str:
    nanos = moment.microsecond * 1000
    digits = min(element.digits, 9)
    trim = element.std is Std.FRAC_SECOND9
    if trim and (digits == 0 or nanos == 0):
        return ""
    text = str(nanos).rjust(9, "0")[:digits]
    if trim:
        text = text.rstrip("0")
        if not text:
            return ""
    return element.separator + text


def _render(moment: datetime, element: Element) -> str:
    std = element.std
    hour12 = moment.hour % 12 or 12
    if std is Std.LONG_YEAR:
        return _pad(moment.year, 4)
    if std is Std.YEAR:
        return _pad(moment.year % 100, 2)
    if std is Std.LONG_MONTH:
        return _LONG_MONTHS[moment.month - 1]
    if std is Std.MONTH:
        return _LONG_MONTHS[moment.month - 1][:3]
    if std is Std.NUM_MONTH:
        return str(moment.month)
    if std is Std.ZERO_MONTH:
        return _pad(moment.month, 2)
    if std is Std.LONG_WEEKDAY:
        return _LONG_DAYS[moment.weekday()]
    if std is Std.WEEKDAY:
        return _LONG_DAYS[moment.weekday()][:3]
    if std is Std.DAY:
        return str(moment.day)
    if std is Std.UNDER_DAY:
        return str(moment.day).rjust(2, " ")
    if std is Std.ZERO_DAY:
        return _pad(moment.day, 2)
    if std is Std.UNDER_YEAR_DAY:
        return str(moment.timetuple().tm_yday).rjust(3, " ")
    if std is Std.ZERO_YEAR_DAY:
        return _pad(moment.timetuple().tm_yday, 3)
    if std is Std.HOUR:
        return _pad(moment.hour, 2)
    if std is Std.HOUR12:
        return str(hour12)
    if std is Std.ZERO_HOUR12:
        return _pad(hour12, 2)
    if std is Std.MINUTE:
        return str(moment.minute)
    if std is Std.ZERO_MINUTE:
        return _pad(moment.minute, 2)
    if std is Std.SECOND:
        return str(moment.second)
    if std is Std.ZERO_SECOND:
        return _pad(moment.second, 2)
    if std is Std.PM:
        return "PM" if moment.hour >= 12 else "AM"
    if std is Std.LOWER_PM:
        return "pm" if moment.hour >= 12 else "am"
    if std is Std.TZ:
        return _zone_name(moment)
    if std in (Std.FRAC_SECOND0, Std.FRAC_SECOND9):
        return _fraction(moment, element)
    return _zone(moment, element)


def format_go(moment: datetime, layout: str) -> str:
    """``moment`` formatted like Go's ``moment.Format(layout)``.

    A naive ``moment`` is taken as UTC (Go times always carry a location).
    """
    out: list[str] = []
    for chunk in chunks(layout):
        out.append(chunk if isinstance(chunk, str) else _render(moment, chunk))
    return "".join(out)

