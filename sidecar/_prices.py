"""Prices: each configured model's per-token prices, fixed at start-up as exact integers.

The cost boundary asks two questions on every request, and both are answered here with a dict
lookup and a few integer multiplications (no genai-prices call, no Decimal, no float):

* :meth:`PriceTable.worst_case_micros` — what the call can cost at most, reserved before the
  provider is called: every input token at the dearest input-side price, plus ``max_tokens`` at
  the output price. Rounded **up** to a whole micro-dollar, so it stays an upper bound.
* :meth:`PriceTable.cost_micros` — what the call did cost, from the provider's usage: uncached
  input, cached reads, cache writes and output (reasoning included) each at its own price.
  Rounded **half up** to the nearest micro-dollar from the exact rational total.

Money is integer micro-dollars. A price of *p* USD per million tokens is *p* micro-dollars per
token, so a price is kept as an exact fraction and scaled, per model, by the least common
denominator of its prices: every product is then an integer, and the only division is the final
rounding. Rounding half up never exceeds rounding up, and both are monotone, so a settled cost
is never above the reservation for the same call when its usage is within the estimate.

Where a price comes from
------------------------
``models.<name>.price`` in the config wins (self-hosted models, negotiated prices). A price
given there as a float is read by its shortest decimal spelling (``0.1`` is exactly 1/10, not
the binary float 0.1000000000000000055...), which is what the operator wrote. A cached-input or
cache-write price left out is the input price: the tokens are input, billed as such.

Otherwise the ``genai-prices`` package (pydantic/genai-prices, bundled data; we never call its
updater, so there is no network) prices the model by its upstream id (``models.<name>.id``,
default the name) on the provider's genai-prices id: openai → ``openai``, anthropic →
``anthropic``, gemini → ``google``, xai → ``x-ai``. ``openai_compatible`` (vLLM, llama.cpp,
Ollama, proxies) has no published price and needs the override. A model with no price is
refused at start-up with a :class:`~sidecar._config.ConfigError` naming ``models.<name>.price``.

Written against genai-prices 0.2.3. Its bundled data carries no snapshot date of its own; the
latest verification it records is 2026-10-26 (most rates: 2026-10-12/14). We use the
*standard* prices: ``ModelInfo.get_prices(at)`` with no ``price_context`` (not the batch,
flex, priority or fast-mode variants, none of which tollgate requests), active at the moment
the table is built. From genai-prices' per-model ``ModelPrice`` we read ``input_mtok``,
``cache_read_mtok``, ``cache_write_mtok`` (Anthropic's default 5-minute writes),
``cache_write_1h_mtok``, ``output_mtok`` and, for the worst case only, ``input_image_mtok``
and ``cache_image_read_mtok``. Audio and video prices are ignored: tollgate sends neither.
genai-prices has no separate reasoning price; reasoning is billed as output by every provider
we speak to, and our normalized ``output_tokens`` already includes it.

Dated price changes: genai-prices records future changes (e.g. a rate that rises on
2027-01-01). The table is fixed at the moment it is built; :attr:`PriceTable.valid_until` is
the first such change among the configured models, and the table should be rebuilt then.

Tiers
-----
genai-prices' ``TieredPrices`` are "cliff" tiers keyed on the call's *total* input tokens
(cached reads and cache writes included): when input exceeds a tier's ``start``, that tier's
rate applies to *all* tokens of the class — output too (Claude Sonnet 4.5 and Gemini 2.5 Pro
above 200k: input 2x, output 1.5x). We cut the token axis at every class's tier starts into
bands, each with one constant price per class, and pick the band by bisection:

* settlement uses the band of the actual input size (exactly genai-prices' rule);
* the worst case uses, for each class, the highest price of any band at or below the band of
  the estimate. Actual input ≤ estimate can only land in such a band, so this is a bound even
  if some tier were cheaper than the one below it.

Cache writes and the worst case
-------------------------------
Pricing cached reads as plain input is safe (they are cheaper), but cache *writes* can cost
more than plain input (Anthropic: 1.25x for a 5-minute write, 2x for a 1-hour write), and a
client can ask for either through ``cache_control``. So the worst case charges every input
token at the dearest input-side price of the model: max(input, cached read, 5-minute write,
1-hour write, image input). Settlement prices cache writes at the 5-minute rate (Anthropic's
default) because normalized usage does not say which TTL was written; 1-hour writes are the
one class settled below the provider's bill — still within the reservation.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

from adapters import Usage

from ._config import Config, ConfigError, PriceConfig

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, ModelPrice, Provider, Tier, TieredPrices

__all__ = ["GENAI_PROVIDER_IDS", "ModelPrices", "PriceTable", "TokenPrices"]

# The provider kinds genai-prices publishes prices for, as its provider ids.
GENAI_PROVIDER_IDS: Mapping[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "xai": "x-ai",
}


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """One band's prices in USD per million tokens (numerically, micro-dollars per token)."""

    input: Fraction
    cached_input: Fraction
    cache_write: Fraction
    output: Fraction
    # The dearest input-side price of this band: what the worst case charges input at.
    worst_input: Fraction


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """A model's prices as resolved at start-up, for display, audit and tests."""

    model: str
    # "config" for an override, else "genai-prices <version>: <provider id>/<model id>".
    source: str
    base: TokenPrices
    # (threshold, prices): the prices when the call's total input tokens exceed the threshold.
    tiers: tuple[tuple[int, TokenPrices], ...] = ()

    def at(self, input_tokens: int) -> TokenPrices:
        """The prices for a call with this many input tokens (cached and written included)."""
        prices = self.base
        for threshold, tier in self.tiers:
            if input_tokens > threshold:
                prices = tier
        return prices


@dataclass(frozen=True, slots=True)
class _Compiled:
    """The request-path form of a model's prices: integers in units of 1/scale micro-dollar."""

    scale: int
    # Band i covers total input tokens in (starts[i-1], starts[i]]; bisect_left finds it.
    starts: tuple[int, ...]
    # Per band: (input, cached read, cache write, output).
    settle: tuple[tuple[int, int, int, int], ...]
    # Per band: (input, output) maxima over this band and every band below it.
    worst: tuple[tuple[int, int], ...]


class PriceTable:
    """Every configured model's prices. Build once at start-up with :meth:`from_config`."""

    __slots__ = ("_compiled", "_prices", "genai_prices_version", "valid_until")

    def __init__(
        self,
        prices: Mapping[str, ModelPrices],
        *,
        valid_until: datetime | None = None,
        genai_prices_version: str | None = None,
    ) -> None:
        self._prices = dict(prices)
        self._compiled = {name: _compile(p) for name, p in self._prices.items()}
        # The first dated price change among the models; rebuild the table from then on.
        self.valid_until = valid_until
        # The genai-prices release the table was read from; None when every price is an override.
        self.genai_prices_version = genai_prices_version

    @classmethod
    def from_config(cls, config: Config, *, at: datetime | None = None) -> PriceTable:
        """Price every model in ``config``, with the published prices in force at ``at``
        (default: now). Raises :class:`ConfigError` naming each model that has no price."""
        at = datetime.now(UTC) if at is None else _utc(at)
        prices: dict[str, ModelPrices] = {}
        problems: list[str] = []
        changes: list[datetime] = []
        lookup: _GenaiLookup | None = None
        for name, model in config.models.items():
            key = f"models.{name}.price"
            if model.price is not None:
                try:
                    prices[name] = _from_override(name, model.price)
                except ValueError as exc:
                    problems.append(f"{key}.{exc}")
                continue
            provider = config.providers.get(model.provider)
            if provider is None:
                problems.append(f"models.{name}.provider: unknown provider {model.provider!r}")
                continue
            upstream = model.id or name
            genai_id = GENAI_PROVIDER_IDS.get(provider.kind)
            if genai_id is None:
                problems.append(
                    f"{key}: no published price for {upstream!r} on {provider.kind} "
                    f"(providers.{model.provider}); set {key} = {{ input = ..., output = ... }} "
                    "in USD per million tokens"
                )
                continue
            # Imported only when needed: loading the bundled data takes ~0.3 s.
            lookup = lookup or _GenaiLookup()
            try:
                found, change = lookup.resolve(name, upstream, provider.kind, genai_id, at)
            except LookupError as exc:
                problems.append(f"{key}: {exc}; set {key} = {{ input = ..., output = ... }}")
                continue
            prices[name] = found
            if change is not None:
                changes.append(change)
        if problems:
            raise ConfigError("\n  ".join(problems))
        return cls(
            prices,
            valid_until=min(changes, default=None),
            genai_prices_version=lookup.version if lookup else None,
        )

    def __contains__(self, model: object) -> bool:
        return model in self._prices

    @property
    def models(self) -> frozenset[str]:
        return frozenset(self._prices)

    def prices(self, model: str) -> ModelPrices:
        return self._prices[model]

    def worst_case_micros(self, model: str, input_tokens: int, max_output_tokens: int) -> int:
        """An upper bound, in micro-dollars rounded up, of a call to ``model`` with at most
        ``input_tokens`` input tokens and ``max_output_tokens`` output tokens (reasoning
        included). A model not in the table raises ``KeyError``."""
        if input_tokens < 0 or max_output_tokens < 0:
            raise ValueError("token counts must not be negative")
        c = self._compiled[model]
        per_input, per_output = c.worst[bisect_left(c.starts, input_tokens)]
        exact = input_tokens * per_input + max_output_tokens * per_output
        return -(-exact // c.scale)

    def cost_micros(self, model: str, usage: Usage) -> int:
        """The cost of a call to ``model`` from its normalized usage, in micro-dollars rounded
        half up. A model not in the table raises ``KeyError``."""
        c = self._compiled[model]
        # Settlement must not fail on a provider's odd numbers: negative counts are zero,
        # cache counts above the input total raise the total, and output is never less than
        # the reasoning it includes.
        cached = max(usage.cached_input_tokens, 0)
        written = max(usage.cache_write_tokens, 0)
        total = max(usage.input_tokens, cached + written)
        output = max(usage.output_tokens, usage.reasoning_tokens, 0)
        per_input, per_cached, per_written, per_output = c.settle[bisect_left(c.starts, total)]
        exact = (
            (total - cached - written) * per_input
            + cached * per_cached
            + written * per_written
            + output * per_output
        )
        return (2 * exact + c.scale) // (2 * c.scale)


def _exact(value: float) -> Fraction:
    """A configured price as the decimal the operator wrote (its shortest spelling)."""
    if isinstance(value, int):
        return Fraction(value)
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return Fraction(Decimal(repr(value)))


def _from_override(name: str, price: PriceConfig) -> ModelPrices:
    exact: dict[str, Fraction] = {}
    fields = {
        "input": price.input,
        "output": price.output,
        "cached_input": price.input if price.cached_input is None else price.cached_input,
        "cache_write": price.input if price.cache_write is None else price.cache_write,
    }
    for field, value in fields.items():
        try:
            exact[field] = _exact(value)
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None
        if exact[field] < 0:
            raise ValueError(f"{field}: must not be negative")
    base = TokenPrices(
        input=exact["input"],
        cached_input=exact["cached_input"],
        cache_write=exact["cache_write"],
        output=exact["output"],
        worst_input=max(exact["input"], exact["cached_input"], exact["cache_write"]),
    )
    return ModelPrices(model=name, source="config", base=base)


def _compile(prices: ModelPrices) -> _Compiled:
    thresholds = [threshold for threshold, _ in prices.tiers]
    if any(t < 0 for t in thresholds) or thresholds != sorted(set(thresholds)):
        raise ValueError(f"{prices.model}: tier thresholds must be distinct, ascending, >= 0")
    bands = [prices.base, *(tier for _, tier in prices.tiers)]
    if any(p < 0 for b in bands for p in (b.input, b.cached_input, b.cache_write, b.output)):
        raise ValueError(f"{prices.model}: prices must not be negative")
    scale = math.lcm(
        *(
            p.denominator
            for band in bands
            for p in (
                band.input,
                band.cached_input,
                band.cache_write,
                band.output,
                band.worst_input,
            )
        )
    )

    def scaled(value: Fraction) -> int:
        return int(value * scale)

    settle = tuple(
        (scaled(b.input), scaled(b.cached_input), scaled(b.cache_write), scaled(b.output))
        for b in bands
    )
    worst: list[tuple[int, int]] = []
    top_input = top_output = 0
    for band in bands:
        # The bound holds by construction, whoever filled in worst_input.
        dearest = max(band.worst_input, band.input, band.cached_input, band.cache_write)
        top_input = max(top_input, scaled(dearest))
        top_output = max(top_output, scaled(band.output))
        worst.append((top_input, top_output))
    return _Compiled(
        scale=scale,
        starts=tuple(thresholds),
        settle=settle,
        worst=tuple(worst),
    )


class _GenaiLookup:
    """Start-up-only access to genai-prices' bundled snapshot."""

    def __init__(self) -> None:
        from genai_prices import __version__, data_snapshot

        self.version: str = __version__
        # The bundled data, unless this process deliberately installed another snapshot.
        self.snapshot: DataSnapshot = data_snapshot.get_snapshot()

    def resolve(
        self, name: str, upstream: str, kind: str, genai_id: str, at: datetime
    ) -> tuple[ModelPrices, datetime | None]:
        """The model's standard prices at ``at`` and the next dated change after it."""
        from genai_prices.types import StartDateConstraint

        # Gemini's adapter accepts "models/gemini-x" for "gemini-x"; genai-prices knows the latter.
        ref = upstream.removeprefix("models/") if kind == "gemini" else upstream
        provider, info = self._find(ref, kind, genai_id)
        where = f"{provider.id}/{info.id}"
        conditions = info.prices if isinstance(info.prices, list) else []
        next_change: datetime | None = None
        for conditional in conditions:
            constraint = conditional.constraint
            if constraint is None:
                continue
            if not isinstance(constraint, StartDateConstraint):
                # Time-of-day prices cannot be fixed at start-up.
                raise LookupError(f"genai-prices {where} has time-of-day prices")
            starts = _midnight_utc(constraint.start_date)
            if starts > at and (next_change is None or starts < next_change):
                next_change = starts
        standard = info.get_prices(at)
        model = _from_genai(name, f"genai-prices {self.version}: {where}", standard, ref, kind)
        return model, next_change

    def _find(self, ref: str, kind: str, genai_id: str) -> tuple[Provider, ModelInfo]:
        try:
            return self.snapshot.find_provider_model(ref, None, genai_id, None)
        except LookupError:
            raise LookupError(
                f"no published price for {ref!r} on {kind} "
                f"(genai-prices {self.version} does not know it)"
            ) from None


def _utc(moment: datetime) -> datetime:
    # As genai-prices does: a naive time is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _midnight_utc(day: date) -> datetime:
    # genai-prices compares the request's UTC date with the start date.
    return datetime.combine(day, time(), tzinfo=UTC)


def _from_genai(name: str, source: str, standard: ModelPrice, ref: str, kind: str) -> ModelPrices:
    def read(key: str) -> Decimal | TieredPrices | None:
        value: Decimal | TieredPrices | None = getattr(standard, key, None)
        return value

    input_price, output_price = read("input_mtok"), read("output_mtok")
    if input_price is None or output_price is None:
        raise LookupError(
            f"genai-prices ({source}) has no per-token input and output price for {ref!r} on {kind}"
        )
    cache_read = read("cache_read_mtok")
    cache_write = read("cache_write_mtok")
    cache_write_1h = read("cache_write_1h_mtok")
    # Only the worst case sees these: tollgate can send images, and normalized usage does not
    # tell image tokens apart, so they are settled as input.
    extra_input = [
        value
        for key in ("input_image_mtok", "cache_image_read_mtok")
        if (value := read(key)) is not None
    ]
    classes = [input_price, output_price, cache_read, cache_write, cache_write_1h, *extra_input]
    thresholds = sorted({tier.start for value in classes for tier in _tiers(value)})

    def band(input_tokens: int) -> TokenPrices:
        plain = _price_at(input_price, input_tokens)
        read_price = plain if cache_read is None else _price_at(cache_read, input_tokens)
        write_default = cache_write if cache_write is not None else cache_write_1h
        write_price = plain if write_default is None else _price_at(write_default, input_tokens)
        input_side = [plain, read_price, write_price]
        input_side += [_price_at(v, input_tokens) for v in extra_input]
        if cache_write_1h is not None:
            input_side.append(_price_at(cache_write_1h, input_tokens))
        return TokenPrices(
            input=plain,
            cached_input=read_price,
            cache_write=write_price,
            output=_price_at(output_price, input_tokens),
            worst_input=max(input_side),
        )

    # Band 0 is input ≤ the first threshold; the band above threshold t starts at t + 1.
    return ModelPrices(
        model=name,
        source=source,
        base=band(0),
        tiers=tuple((t, band(t + 1)) for t in thresholds),
    )


def _tiers(value: Decimal | TieredPrices | None) -> Iterable[Tier]:
    from genai_prices.types import TieredPrices

    return value.tiers if isinstance(value, TieredPrices) else ()


def _price_at(value: Decimal | TieredPrices, input_tokens: int) -> Fraction:
    """genai-prices' cliff rule (``calc_unit_price``): the last tier whose start the call's
    input exceeds applies to all tokens of the class."""
    from genai_prices.types import TieredPrices

    if not isinstance(value, TieredPrices):
        return Fraction(value)
    price = value.base
    for tier in sorted(value.tiers, key=lambda t: t.start):
        if input_tokens > tier.start:
            price = tier.price
    return Fraction(price)
