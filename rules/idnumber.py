"""Identity numbers: GB 11643 resident id numbers and the `other` id types.

A resident id is 6 digits of address code, 8 of birth date (YYYYMMDD), 3 of
sequence and a check digit. The contract checks the province (the first two
digits of the address code), not the county: county codes change over time
and a number keeps the code of the place and year it was issued.

The birth date must be a real calendar date (29 February only in leap years)
and nothing more. There is deliberately no "not before 1900" or "not after
today" bound: the contract asks for neither, a bound on today would make the
verdict on a record depend on the day it is replayed, and python-stdnum's
`stdnum.cn.ric` does not bound the year either.
"""

from __future__ import annotations

import re
from calendar import isleap

from rules.regions import PROVINCE_CODES

RESIDENT_ID = "resident_id"
OTHER_ID = "other"
OTHER_MAX_LENGTH = 32

# GB 11643: the weighted sum of the first 17 digits, mod 11, indexes CHECK_CHARS.
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"
_CHECK_BY_REMAINDER = "0123456789X"
_SEVENTEEN_DIGITS = re.compile(r"[0-9]{17}")
_CHECK_INPUT = frozenset("0123456789Xx")
_OTHER_SHAPE = re.compile(r"[A-Z0-9-]+")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Every "MMDD" of a leap year; "0229" is then checked against the year.
_MONTH_DAYS = frozenset(
    f"{month:02d}{day:02d}"
    for month, days in enumerate(_DAYS_IN_MONTH, start=1)
    for day in range(1, days + 1)
)


def check_digit(first17: str) -> str:
    """The GB 11643 check character ("0"-"9" or "X") for 17 ASCII digits."""
    if not _SEVENTEEN_DIGITS.fullmatch(first17):
        raise ValueError(f"expected 17 digits, got {first17!r}")
    return _check_char(first17)


def _check_char(first17: str) -> str:
    # WEIGHTS are 2**17 .. 2**1 mod 11 and 13 = 2 mod 11, so the weighted sum
    # is 2 * int(first17, 13) mod 11: the same check digit, computed in C (a
    # test checks it against WEIGHTS and CHECK_CHARS).
    return _CHECK_BY_REMAINDER[(1 - 2 * int(first17, 13)) % 11]


def resident_id_problem(value: str) -> str | None:
    """None if `value` is a valid resident id number, else why not.

    A lowercase "x" check character counts as "X" (see `normalise_id_number`).
    """
    if len(value) != 18:
        return "must be 18 characters"
    if not (value.isascii() and value[:17].isdigit() and value[17] in _CHECK_INPUT):
        return "must be 17 digits and a check digit"
    province = value[:2]
    if province not in PROVINCE_CODES:
        return f"unknown province code '{province}'"
    birth = value[6:14]
    if not _is_calendar_date(birth):
        return f"impossible birth date '{birth}'"
    if _check_char(value[:17]) != value[17].upper():
        return "bad check digit"
    return None


def _is_calendar_date(yyyymmdd: str) -> bool:
    """True for a real date from 0001-01-01 to 9999-12-31 (what `datetime.date` takes)."""
    year, month_day = yyyymmdd[:4], yyyymmdd[4:]
    if month_day not in _MONTH_DAYS or year == "0000":
        return False
    return month_day != "0229" or isleap(int(year))


def other_id_problem(value: str) -> str | None:
    """None if `value` is a valid `other` id (1 to 32 of A-Z, 0-9, '-'), else why not."""
    if not 1 <= len(value) <= OTHER_MAX_LENGTH:
        return f"must be 1 to {OTHER_MAX_LENGTH} characters"
    if not _OTHER_SHAPE.fullmatch(value):
        return "must contain only A-Z, 0-9 and '-'"
    return None


def id_number_problem(id_type: str, value: str) -> str | None:
    """None if `value` is a valid number of `id_type`, else why not."""
    if id_type == RESIDENT_ID:
        return resident_id_problem(value)
    if id_type == OTHER_ID:
        return other_id_problem(value)
    raise ValueError(f"unknown id_type {id_type!r}")


def normalise_id_number(id_type: str, value: str) -> str:
    """The canonical spelling: a resident id's lowercase "x" check digit becomes "X".

    Carriers send both; the pseudonym must not tell them apart.
    """
    if id_type == RESIDENT_ID and value.endswith("x"):
        return value[:-1] + "X"
    return value
