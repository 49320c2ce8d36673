"""GB 11643 resident id numbers and `other` ids, with python-stdnum as an oracle.

Where the two are compared: stdnum's `cn.ric` checks what the contract asks
(length, 17 digits and a check character, check digit, a real birth date)
and, on top, the full 6-digit address code against its own list of counties,
including the years each code existed. The contract checks only the
province. So the property tests draw address codes that stdnum knows and
that existed in every year (the province-level "xx0000" codes, which are
real address codes), or from the year they were created on.
"""

from __future__ import annotations

from datetime import date

import pytest
import strategies
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric

from rules.idnumber import (
    CHECK_CHARS,
    WEIGHTS,
    check_digit,
    id_number_problem,
    normalise_id_number,
    other_id_problem,
    resident_id_problem,
)
from rules.regions import PROVINCES, Province, province_name, region_code_problem

# Address codes stdnum accepts for a birth year >= the given one. Hainan,
# Chongqing, Hong Kong and Macao got their codes in 1988, 1997, 1997, 1999.
STDNUM_ADDRESS_SINCE = {
    f"{code}0000": {"46": 1988, "50": 1997, "81": 1997, "82": 1999}.get(code, 1)
    for code in PROVINCES
}
TIMELESS_ADDRESSES = sorted(a for a, since in STDNUM_ADDRESS_SINCE.items() if since == 1)


def weighted_check(first17: str) -> str:
    """The standard's own statement of the check digit."""
    return CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def with_check(first17: str) -> str:
    return first17 + check_digit(first17)


# ---------------------------------------------------------------- examples


def test_the_standards_example_is_valid() -> None:
    assert check_digit("11010519491231002") == "X"
    assert resident_id_problem("11010519491231002X") is None


def test_stdnums_docstring_example_is_valid() -> None:
    assert resident_id_problem("360426199101010071") is None


def test_lowercase_x_is_accepted_and_normalised() -> None:
    assert resident_id_problem("11010519491231002x") is None
    assert normalise_id_number("resident_id", "11010519491231002x") == "11010519491231002X"
    assert normalise_id_number("resident_id", "11010519491231002X") == "11010519491231002X"
    assert normalise_id_number("other", "E1234567x") == "E1234567x"


def test_length() -> None:
    assert resident_id_problem("11010519491231002") == "must be 18 characters"
    assert resident_id_problem("11010519491231002XX") == "must be 18 characters"
    assert resident_id_problem("") == "must be 18 characters"


def test_shape() -> None:
    reason = "must be 17 digits and a check digit"
    assert resident_id_problem("1101051949123100AX") == reason
    assert resident_id_problem("11010519491231002Y") == reason
    assert resident_id_problem("X10105194912310021") == reason
    # Unicode digits are digits to str.isdigit(), not to GB 11643.
    assert resident_id_problem("١١010519491231002X") == reason
    assert resident_id_problem("1101051949123100²X") == reason
    assert resident_id_problem(" 1010519491231002X") == reason


def test_unknown_province() -> None:
    number = with_check("99010519491231002")
    assert resident_id_problem(number) == "unknown province code '99'"
    assert resident_id_problem(with_check("00010519491231002")) == "unknown province code '00'"


def test_birth_date_must_be_a_calendar_date() -> None:
    assert resident_id_problem(strategies.valid_resident_id(birth="20000229")) is None
    assert resident_id_problem(strategies.valid_resident_id(birth="20240229")) is None
    for birth in ("19000229", "20230229", "19901301", "19900001", "19900100", "19900431"):
        number = strategies.valid_resident_id(birth=birth)
        assert resident_id_problem(number) == f"impossible birth date '{birth}'"
    assert resident_id_problem(strategies.valid_resident_id(birth="00000101")) == (
        "impossible birth date '00000101'"
    )


def test_birth_date_has_no_year_bounds() -> None:
    # Documented choice: a real calendar date is enough (as in stdnum).
    for birth in ("00010101", "18500101", "20991231", "99991231"):
        assert resident_id_problem(strategies.valid_resident_id(birth=birth)) is None


def test_bad_check_digit() -> None:
    assert resident_id_problem("110105194912310021") == "bad check digit"
    assert resident_id_problem("11010519491231002x".replace("x", "0")) == "bad check digit"


def test_check_digit_rejects_non_digits() -> None:
    for bad in ("1101051949123100", "1101051949123100a", "١١0105194912310021"[:17]):
        try:
            check_digit(bad)
        except ValueError:
            continue
        raise AssertionError(f"check_digit accepted {bad!r}")


def test_other_ids() -> None:
    assert other_id_problem("E12345678") is None
    assert other_id_problem("A") is None
    assert other_id_problem("H-1234-5678") is None
    assert other_id_problem("X" * 32) is None
    assert other_id_problem("X" * 33) == "must be 1 to 32 characters"
    assert other_id_problem("") == "must be 1 to 32 characters"
    assert other_id_problem("e12345678") == "must contain only A-Z, 0-9 and '-'"
    assert other_id_problem("E 1234") == "must contain only A-Z, 0-9 and '-'"
    assert other_id_problem("Ｅ1234") == "must contain only A-Z, 0-9 and '-'"


def test_id_number_problem_dispatches_on_id_type() -> None:
    assert id_number_problem("resident_id", "11010519491231002X") is None
    assert id_number_problem("other", "11010519491231002X") is None
    assert id_number_problem("resident_id", "E12345678") == "must be 18 characters"


def test_documented_differences_from_stdnum() -> None:
    """Numbers the contract accepts and stdnum's county check does not (or crashes on).

    - a county code stdnum does not list (stdnum 2.2 raises KeyError here);
    - a code used for people born before it existed: everyone in Chongqing
      born before 1997 carries a 50xxxx number issued after 1997.
    """
    assert resident_id_problem(with_check("11999919900101123")) is None
    assert resident_id_problem(with_check("50010319800101123")) is None
    assert not ric.is_valid(with_check("50010319800101123"))


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(digits=strategies.digits(17))
def test_check_digit_matches_the_weights_and_stdnum(digits: str) -> None:
    expected = weighted_check(digits)
    assert check_digit(digits) == expected
    assert ric.calc_check_digit(digits + "0") == expected


@settings(max_examples=300, deadline=None)
@given(
    address=st.sampled_from(TIMELESS_ADDRESSES),
    birth=strategies.digits(8),
    seq=strategies.digits(3),
    check=st.none() | st.sampled_from("0123456789Xx"),
)
def test_validity_agrees_with_stdnum(address: str, birth: str, seq: str, check: str | None) -> None:
    """Any 8 digits as the birth date, and the right or any check character."""
    first17 = address + birth + seq
    number = first17 + (check_digit(first17) if check is None else check)
    assert (resident_id_problem(number) is None) == ric.is_valid(number)


@settings(max_examples=200, deadline=None)
@given(
    address=st.sampled_from(sorted(STDNUM_ADDRESS_SINCE)),
    born=st.dates(),
    seq=strategies.digits(3),
)
def test_generated_valid_numbers_agree_with_stdnum(address: str, born: date, seq: str) -> None:
    number = with_check(address + strategies.yyyymmdd(born) + seq)
    ours = resident_id_problem(number) is None
    assert ours
    if born.year >= STDNUM_ADDRESS_SINCE[address]:
        assert ric.is_valid(number)


@settings(max_examples=200, deadline=None)
@given(number=strategies.digits(17).map(with_check))
def test_unknown_provinces_are_rejected_by_both(number: str) -> None:
    if number[:2] not in PROVINCES:
        assert resident_id_problem(number) == f"unknown province code '{number[:2]}'"
        assert not ric.is_valid(number)


@settings(max_examples=200, deadline=None)
@given(number=strategies.resident_ids())
def test_generated_resident_ids_are_valid(number: str) -> None:
    assert resident_id_problem(number) is None
    assert resident_id_problem(number[:17] + ("0" if number[17] != "0" else "1")) == (
        "bad check digit"
    )


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=40))
def test_problems_are_none_or_a_reason(value: str) -> None:
    for problem in (resident_id_problem(value), other_id_problem(value)):
        assert problem is None or isinstance(problem, str)


# ---------------------------------------------------------------- the province table


def test_province_table() -> None:
    assert len(PROVINCES) == 34
    assert PROVINCES["62"] == Province("62", "甘肃", "Gansu")
    assert province_name("62") == "Gansu"
    assert province_name("15") == "Inner Mongolia"
    assert province_name("82", "zh") == "澳门"
    assert province_name("54", lang="en") == "Tibet"
    with pytest.raises(KeyError):
        province_name("99")
    with pytest.raises(ValueError, match="lang"):
        province_name("62", "fr")


def test_region_code_problem() -> None:
    assert region_code_problem("620102") is None
    assert region_code_problem("820000") is None
    assert region_code_problem("830000") == "unknown province code '83'"
    assert region_code_problem("62010") == "must be 6 digits"
