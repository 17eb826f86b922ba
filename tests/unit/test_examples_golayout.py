"""The Go reference-layout port, against the outputs Go's own time package gives.

The first table is Go's ``time/format_test.go`` (formatTests) at 2009-02-04 21:00:57 PST,
with the fraction cut to microseconds (Python's resolution): .0123456 -> .012345.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from examples.time.golayout import REFERENCE, Element, Std, chunks, format_go

PST = timezone(timedelta(hours=-8), "PST")
GO_TEST_TIME = datetime(2009, 2, 4, 21, 0, 57, 12345, tzinfo=PST)

GO_FORMAT_TESTS = [
    ("ANSIC", "Mon Jan _2 15:04:05 2006", "Wed Feb  4 21:00:57 2009"),
    ("UnixDate", "Mon Jan _2 15:04:05 MST 2006", "Wed Feb  4 21:00:57 PST 2009"),
    ("RubyDate", "Mon Jan 02 15:04:05 -0700 2006", "Wed Feb 04 21:00:57 -0800 2009"),
    ("RFC822", "02 Jan 06 15:04 MST", "04 Feb 09 21:00 PST"),
    ("RFC850", "Monday, 02-Jan-06 15:04:05 MST", "Wednesday, 04-Feb-09 21:00:57 PST"),
    ("RFC1123", "Mon, 02 Jan 2006 15:04:05 MST", "Wed, 04 Feb 2009 21:00:57 PST"),
    ("RFC1123Z", "Mon, 02 Jan 2006 15:04:05 -0700", "Wed, 04 Feb 2009 21:00:57 -0800"),
    ("RFC3339", "2006-01-02T15:04:05Z07:00", "2009-02-04T21:00:57-08:00"),
    ("RFC3339Nano", "2006-01-02T15:04:05.999999999Z07:00", "2009-02-04T21:00:57.012345-08:00"),
    ("Kitchen", "3:04PM", "9:00PM"),
    ("am/pm", "3pm", "9pm"),
    ("AM/PM", "3PM", "9PM"),
    ("two-digit year", "06 01 02", "09 02 04"),
    ("Janet", "Hi Janet, the Month is January", "Hi Janet, the Month is February"),
    ("Stamp", "Jan _2 15:04:05", "Feb  4 21:00:57"),
    ("StampMilli", "Jan _2 15:04:05.000", "Feb  4 21:00:57.012"),
    ("StampMicro", "Jan _2 15:04:05.000000", "Feb  4 21:00:57.012345"),
    ("StampNano", "Jan _2 15:04:05.000000000", "Feb  4 21:00:57.012345000"),
    ("DateTime", "2006-01-02 15:04:05", "2009-02-04 21:00:57"),
    ("DateOnly", "2006-01-02", "2009-02-04"),
    ("TimeOnly", "15:04:05", "21:00:57"),
    ("YearDay", "Jan  2 002 __2 2", "Feb  4 035  35 4"),
    ("Year", "2006 6 06 _6 __6 ___6", "2009 6 09 _6 __6 ___6"),
    ("Month", "Jan January 1 01 _1", "Feb February 2 02 _2"),
    ("DayOfMonth", "2 02 _2 __2", "4 04  4  35"),
    ("DayOfWeek", "Mon Monday", "Wed Wednesday"),
    ("Hour", "15 3 03 _3", "21 9 09 _9"),
    ("Minute", "4 04 _4", "0 00 _0"),
    ("Second", "5 05 _5", "57 57 _57"),
]


@pytest.mark.parametrize(("name", "layout", "expected"), GO_FORMAT_TESTS,
                         ids=[t[0] for t in GO_FORMAT_TESTS])
def test_go_format_table(name: str, layout: str, expected: str) -> None:
    assert format_go(GO_TEST_TIME, layout) == expected


UTC_NOON = datetime(2024, 12, 31, 12, 5, 9, 500000, tzinfo=timezone.utc)
MIDNIGHT_IST = datetime(2024, 1, 1, 0, 7, 3, tzinfo=timezone(timedelta(hours=5, minutes=30),
                                                              "IST"))
NO_NAME = datetime(2024, 7, 4, 23, 59, 59, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))
ODD_SECONDS = datetime(1900, 1, 1, 8, 0, 0,
                       tzinfo=timezone(timedelta(hours=-4, minutes=-56, seconds=-2)))


@pytest.mark.parametrize(("moment", "layout", "expected"), [
    # The reference layout itself, and the README's example.
    (UTC_NOON, REFERENCE, "Tue Dec 31 12:05:09 +0000 UTC 2024"),
    (UTC_NOON, "15:04 Jan 2", "12:05 Dec 31"),
    # The Z variants print Z for UTC, digits otherwise.
    (UTC_NOON, "Z0700|Z07:00|Z07|Z070000|Z07:00:00", "Z|Z|Z|Z|Z"),
    (UTC_NOON, "-0700|-07:00|-07|-070000|-07:00:00", "+0000|+00:00|+00|+000000|+00:00:00"),
    (MIDNIGHT_IST, "Z0700|Z07:00|Z07|-07:00:00", "+0530|+05:30|+05|+05:30:00"),
    (NO_NAME, "-0700 Z07:00 -07", "-0330 -03:30 -03"),
    (ODD_SECONDS, "-070000 Z07:00:00", "-045602 -04:56:02"),
    # A zone without an abbreviation prints as digits for MST, as in Go.
    (NO_NAME, "MST", "-0330"),
    (MIDNIGHT_IST, "MST", "IST"),
    # 12-hour clock at midnight and noon.
    (MIDNIGHT_IST, "3 03 PM pm 15", "12 12 AM am 00"),
    (UTC_NOON, "3 03 PM pm 15", "12 12 PM pm 12"),
    (NO_NAME, "3:04:05 PM", "11:59:59 PM"),
    # Fractions: .0 keeps zeros, .9 trims them (and the dot when nothing is left), "," too.
    (UTC_NOON, "05.000 05.999 05,000 05,999 05.9", "09.500 09.5 09,500 09,5 09.5"),
    (MIDNIGHT_IST, "05.000|05.999|05.9", "03.000|03|03"),
    (UTC_NOON, ".00000000000", ".500000000"),  # more than 9 digits: 9
    # A run of equal digits followed by another digit is no fraction: ".0001" is the
    # literal ".00" and then "01", the month.
    (UTC_NOON, "05.0001", "09.0012"),
    # Day of year, padded with zeros or spaces; the last day of a leap year is 366.
    (UTC_NOON, "002 __2", "366 366"),
    (MIDNIGHT_IST, "002|__2", "001|  1"),
    # Words that merely start like an element stay literal.
    (UTC_NOON, "Monkey Janitor", "Monkey Janitor"),
    (UTC_NOON, "MonTue JanFeb", "TueTue DecFeb"),
    # Literal text, punctuation and unicode pass through untouched.
    (UTC_NOON, "at 15h04 (UTC) ✓", "at 12h05 (UTC) ✓"),
    (UTC_NOON, "_2006", "_2024"),
    (UTC_NOON, "", ""),
])
def test_format(moment: datetime, layout: str, expected: str) -> None:
    assert format_go(moment, layout) == expected


def test_naive_times_are_utc() -> None:
    assert format_go(datetime(2001, 2, 3, 4, 5, 6), "2006-01-02 15:04:05 MST Z07:00") == (
        "2001-02-03 04:05:06 UTC Z")


def test_chunks_split_like_go() -> None:
    assert list(chunks("Jan _2006")) == [Element(Std.MONTH), " _", Element(Std.LONG_YEAR)]
    assert list(chunks("x,999")) == ["x", Element(Std.FRAC_SECOND9, 3, ",")]
    assert list(chunks("1502")) == [Element(Std.HOUR), Element(Std.ZERO_DAY)]
