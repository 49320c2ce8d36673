"""Province codes of GB/T 2260: the first two digits of region and id numbers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Province:
    """A province-level division: its two-digit code and its names."""

    code: str
    name_zh: str
    name_en: str


_TABLE = (
    ("11", "北京", "Beijing"),
    ("12", "天津", "Tianjin"),
    ("13", "河北", "Hebei"),
    ("14", "山西", "Shanxi"),
    ("15", "内蒙古", "Inner Mongolia"),
    ("21", "辽宁", "Liaoning"),
    ("22", "吉林", "Jilin"),
    ("23", "黑龙江", "Heilongjiang"),
    ("31", "上海", "Shanghai"),
    ("32", "江苏", "Jiangsu"),
    ("33", "浙江", "Zhejiang"),
    ("34", "安徽", "Anhui"),
    ("35", "福建", "Fujian"),
    ("36", "江西", "Jiangxi"),
    ("37", "山东", "Shandong"),
    ("41", "河南", "Henan"),
    ("42", "湖北", "Hubei"),
    ("43", "湖南", "Hunan"),
    ("44", "广东", "Guangdong"),
    ("45", "广西", "Guangxi"),
    ("46", "海南", "Hainan"),
    ("50", "重庆", "Chongqing"),
    ("51", "四川", "Sichuan"),
    ("52", "贵州", "Guizhou"),
    ("53", "云南", "Yunnan"),
    ("54", "西藏", "Tibet"),
    ("61", "陕西", "Shaanxi"),
    ("62", "甘肃", "Gansu"),
    ("63", "青海", "Qinghai"),
    ("64", "宁夏", "Ningxia"),
    ("65", "新疆", "Xinjiang"),
    ("71", "台湾", "Taiwan"),
    ("81", "香港", "Hong Kong"),
    ("82", "澳门", "Macao"),
)

PROVINCES: Mapping[str, Province] = MappingProxyType(
    {code: Province(code, zh, en) for code, zh, en in _TABLE}
)
# For membership tests on the hot path: a frozenset is quicker than the proxy.
PROVINCE_CODES = frozenset(PROVINCES)


def province_name(code: str, lang: str = "en") -> str:
    """The name of province `code` in `lang` ("en" or "zh").

    Raises KeyError for a code outside the table, ValueError for another lang.
    """
    province = PROVINCES[code]
    if lang == "en":
        return province.name_en
    if lang == "zh":
        return province.name_zh
    raise ValueError(f"lang must be 'en' or 'zh', not {lang!r}")


def region_code_problem(value: str) -> str | None:
    """None for a 6-digit region code with a known province, else the reason."""
    if not (len(value) == 6 and value.isascii() and value.isdigit()):
        return "must be 6 digits"
    if value[:2] not in PROVINCE_CODES:
        return f"unknown province code '{value[:2]}'"
    return None
