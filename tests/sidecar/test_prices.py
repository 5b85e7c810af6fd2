"""The price table: published prices by hand, overrides, refusals, tiers, rounding, and the
bound the budget invariant rests on (a settled cost never exceeds its reservation)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from functools import cache
from pathlib import Path

import genai_prices
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import Usage
from sidecar._config import Config, ConfigError, PriceConfig, parse_config
from sidecar._prices import ModelPrices, PriceTable, TokenPrices

# Prices are those in force on this day; the bundled data is pinned by the lock on genai-prices.
AT = datetime(2026, 11, 22, tzinfo=UTC)

PROVIDERS = """
default_route = "chat"

[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1"

[providers.anthropic]
kind = "anthropic"
base_url = "https://api.anthropic.com"

[providers.google]
kind = "gemini"
base_url = "https://generativelanguage.googleapis.com"

[providers.xai]
kind = "xai"
base_url = "https://api.x.ai/v1"

[providers.local]
kind = "openai_compatible"
base_url = "http://127.0.0.1:11434/v1"

[classes.all]
members = ["gpt-4o"]

[routes.chat]
class = "all"
"""

MODELS = """
[models.gpt-4o]
provider = "openai"
context_window = 128000

[models.sonnet]
provider = "anthropic"
id = "claude-sonnet-4-5"
context_window = 200000

[models.flash]
provider = "google"
id = "models/gemini-2.5-flash"
context_window = 1048576

[models.pro]
provider = "google"
id = "gemini-2.5-pro"
context_window = 1048576

[models.grok-4]
provider = "xai"
context_window = 256000

[models.llama]
provider = "local"
id = "llama3.1:8b"
context_window = 8192
price = { input = 0.1, output = 0.2 }

[models.negotiated]
provider = "anthropic"
id = "claude-sonnet-4-5"
context_window = 200000
price = { input = 2.4, output = 12, cached_input = 0.24, cache_write = 3 }
"""


MODEL_NAMES = ["gpt-4o", "sonnet", "flash", "pro", "grok-4", "llama", "negotiated"]


def config(models: str) -> Config:
    return parse_config(PROVIDERS + models, base_dir=Path("."))


@cache
def table() -> PriceTable:
    # Loading genai-prices' bundled data takes a moment: once per test session.
    return PriceTable.from_config(config(MODELS), at=AT)


def refusal(models: str) -> str:
    with pytest.raises(ConfigError) as info:
        PriceTable.from_config(config(models), at=AT)
    return str(info.value)


# --- published prices, checked by hand ------------------------------------------------------


def test_gpt_4o_matches_the_published_price() -> None:
    prices = table().prices("gpt-4o")
    assert prices.source == f"genai-prices {genai_prices.__version__}: openai/gpt-4o"
    # $2.50 in, $1.25 cached in, $10 out per million tokens; OpenAI has no cache-write charge.
    assert prices.base == TokenPrices(
        input=Fraction("2.5"),
        cached_input=Fraction("1.25"),
        cache_write=Fraction("2.5"),
        output=Fraction(10),
        worst_input=Fraction("2.5"),
    )
    assert prices.tiers == ()
    # 6,000 uncached x 2.5 + 4,000 cached x 1.25 + 500 out x 10 micro-dollars.
    usage = Usage(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=500)
    assert table().cost_micros("gpt-4o", usage) == 15_000 + 5_000 + 5_000
    assert table().worst_case_micros("gpt-4o", 10_000, 500) == 25_000 + 5_000


def test_claude_sonnet_4_5_prices_cache_reads_and_writes() -> None:
    base = table().prices("sonnet").base
    assert (base.input, base.output) == (Fraction(3), Fraction(15))
    assert (base.cached_input, base.cache_write) == (Fraction("0.3"), Fraction("3.75"))
    # Anthropic's wire input_tokens (here 5) excludes both cache classes; normalized input
    # includes them: 5 + 4,735 written + 1,000 read.
    usage = Usage(
        input_tokens=5 + 4_735 + 1_000,
        cache_write_tokens=4_735,
        cached_input_tokens=1_000,
        output_tokens=255,
    )
    # 5 x 3 + 4,735 x 3.75 + 1,000 x 0.3 + 255 x 15 = 15 + 17,756.25 + 300 + 3,825.
    assert table().cost_micros("sonnet", usage) == 21_896
    # The worst case charges input at the 1-hour cache-write price ($6 = 2x input): a client
    # may ask for that TTL, and it is the dearest way to send an input token.
    assert base.worst_input == 6
    assert table().worst_case_micros("sonnet", 5_740, 255) == 5_740 * 6 + 255 * 15


def test_gemini_2_5_flash_bills_thinking_as_output() -> None:
    base = table().prices("flash").base
    assert (base.input, base.cached_input, base.output) == (
        Fraction("0.3"),
        Fraction("0.03"),
        Fraction("2.5"),
    )
    # candidatesTokenCount 100 + thoughtsTokenCount 400: normalized output is 500.
    thinking = Usage(input_tokens=1_000, output_tokens=500, reasoning_tokens=400)
    plain = Usage(input_tokens=1_000, output_tokens=500)
    assert table().cost_micros("flash", thinking) == table().cost_micros("flash", plain)
    assert table().cost_micros("flash", thinking) == 300 + 1_250
    # Implicit cache hits: 600 of the 1,000 input tokens at $0.03.
    cached = Usage(input_tokens=1_000, cached_input_tokens=600, output_tokens=500)
    assert table().cost_micros("flash", cached) == 120 + 18 + 1_250


def test_grok_4_matches_the_bundled_price_and_xai_reasoning_shape() -> None:
    prices = table().prices("grok-4")
    # xAI's "grok-4" alias is grok-4-0709: $3 in, $0.75 cached in, $15 out, no tier bundled.
    assert prices.source.endswith("x-ai/grok-4-0709")
    assert (prices.base.input, prices.base.cached_input, prices.base.output) == (
        Fraction(3),
        Fraction("0.75"),
        Fraction(15),
    )
    assert prices.tiers == ()
    # xAI's completion_tokens (30) excludes reasoning (70); the adapter adds them back.
    reasoning = Usage(input_tokens=100, output_tokens=30 + 70, reasoning_tokens=70)
    assert table().cost_micros("grok-4", reasoning) == 100 * 3 + 100 * 15
    assert table().cost_micros("grok-4", reasoning) == table().cost_micros(
        "grok-4", Usage(input_tokens=100, output_tokens=100)
    )


def test_reasoning_is_never_priced_below_itself() -> None:
    # An adapter that forgot to add reasoning to output still pays for the reasoning.
    short = Usage(input_tokens=0, output_tokens=10, reasoning_tokens=70)
    assert table().cost_micros("grok-4", short) == 70 * 15


@pytest.mark.parametrize(
    ("model", "provider_id", "ref"),
    [
        ("gpt-4o", "openai", "gpt-4o"),
        ("sonnet", "anthropic", "claude-sonnet-4-5"),
        ("flash", "google", "gemini-2.5-flash"),
        ("pro", "google", "gemini-2.5-pro"),
        ("grok-4", "x-ai", "grok-4"),
    ],
)
@pytest.mark.parametrize(
    ("total", "cached", "written", "output"),
    [
        (0, 0, 0, 0),
        (1, 0, 0, 1),
        (12_345, 2_000, 0, 678),
        (150_000, 100_000, 20_000, 8_000),
        (200_000, 0, 0, 1_000),
        (200_001, 50_000, 10_000, 1_000),
        (350_000, 0, 300_000, 65_000),
    ],
)
def test_settlement_agrees_with_genai_prices(
    model: str, provider_id: str, ref: str, total: int, cached: int, written: int, output: int
) -> None:
    # genai-prices' own calculator, same snapshot and date: our precomputed integers must
    # reproduce its tiers and its cache decomposition (its input_tokens includes both cache
    # classes, as ours does; a class it has no price for is billed as plain input, as ours is).
    usage = Usage(
        input_tokens=total,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=output,
    )
    reference = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=total,
            cache_read_tokens=cached,
            cache_write_tokens=written,
            output_tokens=output,
        ),
        ref,
        provider_id=provider_id,
        genai_request_timestamp=AT,
    )
    micros = (reference.total_price * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert table().cost_micros(model, usage) == int(micros)


# --- tiers ----------------------------------------------------------------------------------


def test_tier_applies_to_every_token_once_input_exceeds_the_threshold() -> None:
    # Claude Sonnet 4.5 above 200k input: $6 in, $0.60 cached, $7.50 write, $22.50 out.
    at_threshold = Usage(input_tokens=200_000, output_tokens=1_000)
    above = Usage(input_tokens=200_001, output_tokens=1_000)
    assert table().cost_micros("sonnet", at_threshold) == 200_000 * 3 + 1_000 * 15
    assert table().cost_micros("sonnet", above) == 200_001 * 6 + 22_500
    mixed = Usage(
        input_tokens=300_000,
        cached_input_tokens=100_000,
        cache_write_tokens=50_000,
        output_tokens=2_000,
    )
    # The tier is chosen by total input, cache classes included.
    # 150,000 x 6 + 100,000 x 0.6 + 50,000 x 7.5 + 2,000 x 22.5.
    assert table().cost_micros("sonnet", mixed) == 900_000 + 60_000 + 375_000 + 45_000


def test_worst_case_uses_the_tier_of_the_estimate() -> None:
    # Gemini 2.5 Pro: $1.25 / $10 up to 200k input, $2.50 / $15 above.
    assert table().worst_case_micros("pro", 200_000, 1_000) == 250_000 + 10_000
    # 200,001 x 2.5 + 1,000 x 15 = 515,002.5, rounded up.
    assert table().worst_case_micros("pro", 200_001, 1_000) == 515_003
    assert table().prices("pro").at(200_001).input == Fraction("2.5")


def test_a_cheaper_upper_tier_never_lowers_the_worst_case() -> None:
    # Invented prices, to exercise the rule: the worst case takes the dearest band at or
    # below the estimate's, so a discount tier cannot undercut a call that lands lower.
    def band(inp: int, out: int) -> TokenPrices:
        return TokenPrices(
            input=Fraction(inp),
            cached_input=Fraction(inp),
            cache_write=Fraction(inp),
            output=Fraction(out),
            worst_input=Fraction(inp),
        )

    odd = PriceTable({"odd": ModelPrices("odd", "test", band(5, 20), ((1_000, band(1, 2)),))})
    assert odd.cost_micros("odd", Usage(input_tokens=900, output_tokens=10)) == 4_700
    assert odd.worst_case_micros("odd", 2_000, 10) == 2_000 * 5 + 10 * 20


# --- overrides, refusals --------------------------------------------------------------------


def test_override_wins_and_is_exact() -> None:
    prices = table().prices("negotiated")
    assert prices.source == "config"
    assert prices.base == TokenPrices(
        input=Fraction("2.4"),
        cached_input=Fraction("0.24"),
        cache_write=Fraction(3),
        output=Fraction(12),
        worst_input=Fraction(3),
    )
    assert prices.tiers == ()
    usage = Usage(
        input_tokens=1_000, cached_input_tokens=100, cache_write_tokens=200, output_tokens=10
    )
    # 700 x 2.4 + 100 x 0.24 + 200 x 3 + 10 x 12.
    assert table().cost_micros("negotiated", usage) == 1_680 + 24 + 600 + 120
    # The cache write ($3) is dearer than input ($2.40): the worst case prices input at it.
    assert table().worst_case_micros("negotiated", 1_000, 10) == 3_000 + 120


def test_override_defaults_cache_prices_to_input() -> None:
    prices = table().prices("llama")
    assert prices.base.cached_input == prices.base.cache_write == prices.base.input
    # 0.1 is read as the decimal the operator wrote, not as the binary float.
    assert prices.base.input == Fraction(1, 10)


def test_only_overrides_need_no_genai_prices() -> None:
    only = PriceTable.from_config(
        config(
            """
[models.gpt-4o]
provider = "local"
context_window = 8192
price = { input = 1, output = 2 }
"""
        ),
        at=AT,
    )
    assert only.genai_prices_version is None
    assert only.models == {"gpt-4o"}
    assert table().genai_prices_version == genai_prices.__version__


def test_model_without_a_published_price_is_refused_with_its_key() -> None:
    message = refusal(
        """
[models.gpt-4o]
provider = "openai"
context_window = 128000

[models.llama]
provider = "local"
id = "llama3.1:8b"
context_window = 8192

[models.gpt-9]
provider = "openai"
context_window = 128000

[models.embed]
provider = "openai"
id = "text-embedding-3-small"
context_window = 8192
"""
    )
    # Every unpriced model is reported at once, each under its own key.
    assert "gpt-4o" not in message
    assert "models.llama.price: no published price for 'llama3.1:8b' on openai_compatible" in (
        message
    )
    assert "models.gpt-9.price: no published price for 'gpt-9' on openai" in message
    assert "models.embed.price: " in message
    assert "no per-token input and output price" in message
    assert message.count("set models.") == 3


@pytest.mark.parametrize(
    ("price", "key"),
    [
        (PriceConfig(input=1, output=2, cache_write=-1), "models.gpt-4o.price.cache_write: "),
        (PriceConfig(input=math.inf, output=2), "models.gpt-4o.price.input: "),
        (PriceConfig(input=1, output=math.nan), "models.gpt-4o.price.output: "),
    ],
)
def test_invalid_override_is_refused_with_its_key(price: PriceConfig, key: str) -> None:
    # Built past parse_config, which catches some of these itself: the table must not rely
    # on that.
    valid = config(
        """
[models.gpt-4o]
provider = "local"
context_window = 8192
price = { input = 1, output = 1 }
"""
    )
    bad = msgspec.structs.replace(valid.models["gpt-4o"], price=price)
    with pytest.raises(ConfigError) as info:
        PriceTable.from_config(msgspec.structs.replace(valid, models={"gpt-4o": bad}), at=AT)
    assert str(info.value).startswith(key)


# --- dated price changes --------------------------------------------------------------------


def test_prices_are_those_in_force_when_the_table_is_built() -> None:
    models = """
[models.gpt-4o]
provider = "openai"
id = "o3"
context_window = 200000
"""
    # OpenAI cut o3 from $10/$40 to $2/$8 on 2025-06-10.
    before = PriceTable.from_config(config(models), at=datetime(2025, 6, 1, tzinfo=UTC))
    after = PriceTable.from_config(config(models), at=datetime(2025, 6, 10, tzinfo=UTC))
    assert before.prices("gpt-4o").base.input == 10
    assert before.prices("gpt-4o").base.output == 40
    assert after.prices("gpt-4o").base.input == 2
    assert after.prices("gpt-4o").base.output == 8
    assert before.valid_until == datetime(2025, 6, 10, tzinfo=UTC)
    assert after.valid_until is None


# --- rounding ---------------------------------------------------------------------------------


def test_rounding_settles_half_up_and_reserves_up() -> None:
    llama = table()  # $0.10 in, $0.20 out per million: 0.1 and 0.2 micro-dollars per token
    assert llama.cost_micros("llama", Usage(input_tokens=4)) == 0  # 0.4
    assert llama.cost_micros("llama", Usage(input_tokens=5)) == 1  # 0.5
    assert llama.cost_micros("llama", Usage(input_tokens=14)) == 1  # 1.4
    assert llama.cost_micros("llama", Usage(input_tokens=3, output_tokens=1)) == 1  # 0.5
    assert llama.worst_case_micros("llama", 1, 0) == 1  # 0.1
    assert llama.worst_case_micros("llama", 10, 0) == 1  # exactly 1
    assert llama.worst_case_micros("llama", 11, 0) == 2  # 1.1
    assert llama.worst_case_micros("llama", 0, 0) == 0
    # Rounding happens once, on the exact total, not per token class: 0.4 + 0.4 rounds to 1.
    assert llama.cost_micros("llama", Usage(input_tokens=4, output_tokens=2)) == 1


def test_odd_usage_never_fails_settlement() -> None:
    odd = Usage(input_tokens=-5, cached_input_tokens=10, cache_write_tokens=-3, output_tokens=-1)
    assert table().cost_micros("gpt-4o", odd) == 13  # 10 cached x 1.25 = 12.5
    # Cache counts above the reported input raise the total rather than going negative.
    over = Usage(input_tokens=100, cached_input_tokens=80, cache_write_tokens=80)
    assert table().cost_micros("sonnet", over) == 24 + 300  # 80 x 0.3 + 80 x 3.75


def test_unknown_model_and_negative_bounds_are_errors() -> None:
    with pytest.raises(KeyError):
        table().cost_micros("nope", Usage())
    with pytest.raises(KeyError):
        table().worst_case_micros("nope", 1, 1)
    with pytest.raises(ValueError, match="negative"):
        table().worst_case_micros("gpt-4o", -1, 1)
    assert "gpt-4o" in table()
    assert "nope" not in table()


# --- the bound the budget invariant rests on ------------------------------------------------


@st.composite
def within(draw: st.DrawFn, estimate_max: int = 1_200_000) -> tuple[int, int, Usage]:
    estimate = draw(st.integers(0, estimate_max))
    max_tokens = draw(st.integers(0, 200_000))
    total = draw(st.integers(0, estimate))
    cached = draw(st.integers(0, total))
    written = draw(st.integers(0, total - cached))
    output = draw(st.integers(0, max_tokens))
    reasoning = draw(st.integers(0, output))
    usage = Usage(
        input_tokens=total,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=output,
        reasoning_tokens=reasoning,
    )
    return estimate, max_tokens, usage


@given(model=st.sampled_from(MODEL_NAMES), call=within())
def test_settled_cost_never_exceeds_the_reservation(
    model: str, call: tuple[int, int, Usage]
) -> None:
    estimate, max_tokens, usage = call
    reserved = table().worst_case_micros(model, estimate, max_tokens)
    cost = table().cost_micros(model, usage)
    assert 0 <= cost <= reserved


prices = st.fractions(min_value=0, max_value=100, max_denominator=10_000)


@st.composite
def invented(draw: st.DrawFn) -> ModelPrices:
    # Any prices at all, cache classes dearer than input and cheaper upper tiers included.
    def band() -> TokenPrices:
        inp, cached, written = draw(prices), draw(prices), draw(prices)
        extra = draw(prices)  # e.g. a 1-hour cache write: only the worst case sees it
        return TokenPrices(
            input=inp,
            cached_input=cached,
            cache_write=written,
            output=draw(prices),
            worst_input=max(inp, cached, written, extra),
        )

    thresholds = sorted(draw(st.sets(st.integers(0, 1_000_000), max_size=3)))
    return ModelPrices("m", "test", band(), tuple((t, band()) for t in thresholds))


@given(model=invented(), call=within())
def test_bound_holds_for_any_prices_and_tiers(
    model: ModelPrices, call: tuple[int, int, Usage]
) -> None:
    estimate, max_tokens, usage = call
    invented_table = PriceTable({"m": model})
    assert invented_table.cost_micros("m", usage) <= invented_table.worst_case_micros(
        "m", estimate, max_tokens
    )
    # And settlement is the exact total, rounded half up.
    band = model.at(usage.input_tokens)
    exact = (
        (usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens) * band.input
        + usage.cached_input_tokens * band.cached_input
        + usage.cache_write_tokens * band.cache_write
        + usage.output_tokens * band.output
    )
    assert invented_table.cost_micros("m", usage) == math.floor(exact + Fraction(1, 2))


@given(
    inp=st.floats(0, 1_000, allow_nan=False),
    out=st.floats(0, 1_000, allow_nan=False),
    write=st.floats(0, 1_000, allow_nan=False),
    call=within(estimate_max=2_000_000),
)
def test_bound_holds_for_any_override(
    inp: float, out: float, write: float, call: tuple[int, int, Usage]
) -> None:
    estimate, max_tokens, usage = call
    overridden = PriceTable.from_config(
        config(
            f"""
[models.gpt-4o]
provider = "local"
context_window = 8192
price = {{ input = {inp!r}, output = {out!r}, cache_write = {write!r} }}
"""
        ),
        at=AT,
    )
    assert overridden.cost_micros("gpt-4o", usage) <= overridden.worst_case_micros(
        "gpt-4o", estimate, max_tokens
    )


def test_hand_built_tables_are_checked() -> None:
    flat = TokenPrices(Fraction(1), Fraction(1), Fraction(1), Fraction(1), Fraction(1))
    with pytest.raises(ValueError, match="ascending"):
        PriceTable({"m": ModelPrices("m", "test", flat, ((10, flat), (5, flat)))})
    negative = TokenPrices(Fraction(-1), Fraction(1), Fraction(1), Fraction(1), Fraction(1))
    with pytest.raises(ValueError, match="negative"):
        PriceTable({"m": ModelPrices("m", "test", negative)})
    # A worst_input below the input-side prices is raised to them: the bound cannot be lost.
    low = TokenPrices(Fraction(1), Fraction(1), Fraction(3), Fraction(1), Fraction(0))
    assert PriceTable({"m": ModelPrices("m", "test", low)}).worst_case_micros("m", 10, 0) == 30
