"""The one place that converts and formats money.

Amounts live as integer øre in DataFrames and databases, as ``Decimal`` at the edges, and as
``"101.00"`` strings only in what is sent to a target. Floats never touch money.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

ORE_PER_KRONE = 100
_CENT = Decimal("0.01")


class MoneyError(ValueError):
    """An amount that cannot be represented exactly in øre."""


def to_ore(amount: Decimal | str | int) -> int:
    """Kroner (Decimal or string such as ``"101.50"``) to integer øre, refusing fractions of øre."""
    if isinstance(amount, bool):
        raise MoneyError(f"not an amount: {amount!r}")
    if isinstance(amount, int):
        return amount * ORE_PER_KRONE
    if isinstance(amount, float):
        raise MoneyError("floats are not accepted for money; pass a Decimal or a string")
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation as exc:
        raise MoneyError(f"not an amount: {amount!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"not an amount: {amount!r}")
    ore = value * ORE_PER_KRONE
    if ore != ore.to_integral_value():
        raise MoneyError(f"{amount} has more than two decimals")
    return int(ore)


def to_decimal(ore: int) -> Decimal:
    """Integer øre to kroner as an exact Decimal with two places."""
    return (Decimal(int(ore)) / ORE_PER_KRONE).quantize(_CENT)


def format_amount(ore: int) -> str:
    """Integer øre to the wire format ``"-101.00"`` (dot decimal separator, no grouping)."""
    ore = int(ore)
    sign = "-" if ore < 0 else ""
    whole, cents = divmod(abs(ore), ORE_PER_KRONE)
    return f"{sign}{whole}.{cents:02d}"


def format_nok(ore: int) -> str:
    """Integer øre for people: ``"kr 1 234,50"`` (Norwegian grouping and decimal comma)."""
    text = format_amount(ore)
    sign, body = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, cents = body.split(".")
    grouped = f"{int(whole):,}".replace(",", "\u00a0")
    return f"{sign}kr {grouped},{cents}"


def mileage_ore(km_tenths: int, rate_ore_per_km: int) -> int:
    """Mileage allowance in øre from distance in tenths of km, rounded half-even to whole øre."""
    exact = Decimal(int(km_tenths)) * Decimal(int(rate_ore_per_km)) / 10
    return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))
