from decimal import Decimal

import pytest

from integration_hub.money import (
    MoneyError,
    format_amount,
    format_nok,
    mileage_ore,
    to_decimal,
    to_ore,
)


@pytest.mark.parametrize(
    ("ore", "text"),
    [
        (10100, "101.00"),
        (-10100, "-101.00"),
        (5, "0.05"),
        (-5, "-0.05"),
        (0, "0.00"),
        (123456789, "1234567.89"),
    ],
)
def test_format_amount_is_exact(ore: int, text: str) -> None:
    assert format_amount(ore) == text
    assert to_ore(text) == ore
    assert to_decimal(ore) == Decimal(text)


def test_floats_and_fractions_of_ore_are_refused() -> None:
    with pytest.raises(MoneyError):
        to_ore(0.1)  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        to_ore("1.005")
    with pytest.raises(MoneyError):
        to_ore("abc")


def test_mileage_rounds_half_even_to_whole_ore() -> None:
    assert mileage_ore(1235, 350) == 43225  # 123.5 km x 3.50
    assert mileage_ore(1, 5) == 0  # 0.1 km x 0.05 = 0.5 øre -> 0 (half even)
    assert mileage_ore(3, 5) == 2  # 1.5 øre -> 2


def test_format_nok_for_people() -> None:
    assert format_nok(123456) == "kr 1\u00a0234,56"
    assert format_nok(-5) == "-kr 0,05"
