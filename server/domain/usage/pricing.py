"""Prices per million tokens: the server's override file first, then the ``genai-prices``
library, matched by provider and model the way Go tapes' ``deck`` normalizes names.

The override file (``TAPES_SERVER_PRICING``) has the shape of Go tapes' ``deck --pricing`` file:
``{"model": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}, ...}`` in US
dollars per million tokens; a missing rate is 0, as in Go. Its numbers are read as decimals,
never floats. A model neither knows has no price: :meth:`PriceBook.lookup` returns ``None`` and
the report puts its tokens in the ``unpriced`` bucket.

``genai-prices`` prices some models in tiers by the tokens of one request; usage is summed over
many requests, so the base rate (below the first tier) is used. A rate the library lacks for a
cache is taken as the input rate (OpenAI bills cache writes as input).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import msgspec
from genai_prices import data_snapshot
from genai_prices.types import TieredPrices

__all__ = ["Price", "PriceBook", "PricingFileError", "load_overrides", "normalize_model"]

_MAX_RATE = Decimal(1_000_000)
_MILLION = Decimal(1_000_000)


class _Entry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cache_read: Decimal = Decimal(0)
    cache_write: Decimal = Decimal(0)


class PricingFileError(ValueError):
    """The override file cannot be read or is not in the ``--pricing`` shape."""


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    source: str

    def cost(self, base_input: int, cache_write: int, cache_read: int, output: int) -> Decimal:
        total = (
            base_input * self.input
            + cache_write * self.cache_write
            + cache_read * self.cache_read
            + output * self.output
        )
        return total / _MILLION

    def cache_savings(self, cache_read: int) -> Decimal:
        """What the cache reads would have cost as input, less what they cost."""
        return cache_read * (self.input - self.cache_read) / _MILLION


_ANTHROPIC_DATE = re.compile(r"-\d{8}$")
_OPENAI_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_VERSIONS = (("-4-6", "-4.6"), ("-4-5", "-4.5"), ("-4-1", "-4.1"), ("-3-5", "-3.5"))


def normalize_model(model: str) -> str:
    """Go tapes' ``deck`` normalization: lower case, no date suffix (``-20250929`` or
    ``-2024-08-06``), version dashes as dots (``claude-sonnet-4-5`` → ``claude-sonnet-4.5``)."""
    name = model.strip().lower()
    name = _ANTHROPIC_DATE.sub("", name)
    if len(name) >= 12:
        name = _OPENAI_DATE.sub("", name)
    for dashed, dotted in _VERSIONS:
        name = name.replace(dashed, dotted)
    return name


def load_overrides(path: str) -> dict[str, Price]:
    """The override file at ``path`` ("" for none), checked; :class:`PricingFileError` with one
    line otherwise."""
    if not path:
        return {}
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PricingFileError(f"cannot read pricing file {path}: {exc.strerror}") from None
    try:
        entries = msgspec.json.decode(raw, type=dict[str, _Entry])
    except msgspec.ValidationError as exc:
        raise PricingFileError(f"pricing file {path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PricingFileError(f"pricing file {path} is not JSON: {exc}") from None
    prices = {}
    for name, e in entries.items():
        rates = (e.input, e.output, e.cache_read, e.cache_write)
        if not all(rate.is_finite() and 0 <= rate <= _MAX_RATE for rate in rates):
            raise PricingFileError(
                f"pricing file {path}: {name[:64]!r}: rates are dollars per million tokens, "
                f"from 0 to {_MAX_RATE}"
            )
        prices[name] = Price(*rates, "override")
    return prices


def _rate(value: object) -> Decimal | None:
    if isinstance(value, TieredPrices):
        return value.base
    return value if isinstance(value, Decimal) else None


class PriceBook:
    """Looks prices up (and remembers them) for one set of overrides and one moment."""

    def __init__(self, overrides: dict[str, Price], now: datetime) -> None:
        self._overrides = overrides
        self._now = now
        self.describe = f"genai-prices {version('genai-prices')}" + (
            " + server price file" if overrides else ""
        )

    def lookup(self, model: str, provider: str) -> Price | None:
        if not model:
            return None
        normalized = normalize_model(model)
        found = self._overrides.get(normalized) or self._overrides.get(model)
        return found or _library_price(normalized, provider.strip().lower(), self._now.date())


@lru_cache(maxsize=4096)
def _library_price(model: str, provider: str, day: date) -> Price | None:
    snapshot = data_snapshot.get_snapshot()
    for provider_id in dict.fromkeys((provider or None, None)):
        try:
            _provider, info = snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            continue
        prices = info.get_prices(datetime(day.year, day.month, day.day, tzinfo=UTC))
        input_rate = _rate(getattr(prices, "input_mtok", None))
        output_rate = _rate(getattr(prices, "output_mtok", None))
        if input_rate is None or output_rate is None:
            return None
        read = _rate(getattr(prices, "cache_read_mtok", None))
        write = _rate(getattr(prices, "cache_write_mtok", None))
        return Price(
            input_rate, output_rate, input_rate if read is None else read,
            input_rate if write is None else write, f"genai-prices:{info.id}",
        )  # fmt: skip
    return None
