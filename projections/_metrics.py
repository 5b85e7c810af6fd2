"""Prometheus text exposition (format 0.0.4) of the projections.

Metrics are rendered from the folds (usage, alerts, budgets), not counted separately, so they agree
with ``tollgate usage`` and survive restarts (the folds are checkpointed and rebuilt by replay).
Names follow the OpenTelemetry GenAI semantic conventions where one exists
(``gen_ai.client.operation.duration`` → ``gen_ai_client_operation_duration_seconds``, attributes
``gen_ai.provider.name``, ``gen_ai.response.model``, ``gen_ai.token.type``); the rest are
``tollgate_*``. Latency histograms are built from the usage view's sketches, so a bucket's count
is exact to the sketch's 1%: a value within 1% of a bound may land in the next bucket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from ._alerts import AlertBook
from ._budget import BudgetBook
from ._sketch import DurationSketch
from ._usage import UsageKey, UsageView

__all__ = ["render_prometheus"]

# OpenTelemetry's recommended boundaries (seconds) for operation duration and first token.
DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
TTFT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BREAKER_VALUE: Final = {"closed": 0, "half_open": 1, "open": 2}

# Provider kinds → the semantic conventions' well-known ``gen_ai.provider.name`` values.
GEN_AI_PROVIDER_NAMES: Final = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "xai": "x_ai",
    "openai_compatible": "openai_compatible",
}

Labels = tuple[tuple[str, str], ...]


def render_prometheus(
    usage: UsageView,
    alerts: AlertBook,
    budgets: BudgetBook,
    *,
    provider_kinds: Mapping[str, str],
    position: int,
) -> str:
    """The exposition text. ``provider_kinds`` maps configured provider names to their kind;
    ``position`` is the last log sequence number the projections have folded."""
    out = _Exposition()
    rows = list(usage.rows())

    def gen_ai(key: UsageKey) -> Labels:
        return (
            ("gen_ai_operation_name", "chat"),
            (
                "gen_ai_provider_name",
                GEN_AI_PROVIDER_NAMES.get(provider_kinds.get(key.provider, ""), ""),
            ),
            ("tollgate_provider", key.provider),
            ("gen_ai_response_model", key.model),
        )

    def traffic(key: UsageKey) -> Labels:
        return (("tenant", key.tenant), ("task", key.task), ("model_class", key.model_class))

    requests: dict[Labels, float] = {}
    for key, row in rows:
        if row.successes:
            _add(requests, (*traffic(key), ("outcome", "ok")), row.successes)
        for error_type, n in row.failures.items():
            _add(requests, (*traffic(key), ("outcome", error_type)), n)
    out.family("tollgate_requests_total", "counter", "Requests ended, by outcome", requests)

    attempts: dict[Labels, float] = {}
    for key, row in rows:
        errors = sum(row.attempt_errors.values())
        if row.attempts - errors:
            _add(attempts, (*gen_ai(key), ("error_type", "")), row.attempts - errors)
        for error_class, n in row.attempt_errors.items():
            _add(attempts, (*gen_ai(key), ("error_type", error_class)), n)
    out.family(
        "tollgate_attempts_total",
        "counter",
        "Provider calls, by error class (empty: succeeded)",
        attempts,
    )
    for name, field, help_text in (
        ("tollgate_retries_total", "retries", "Same-model retries scheduled"),
        ("tollgate_fallbacks_total", "fallbacks", "Fallbacks away from a model"),
        ("tollgate_cascade_escalations_total", "cascade_escalations", "Cascade escalations"),
    ):
        counted: dict[Labels, float] = {}
        for key, row in rows:
            if n := getattr(row, field):
                _add(counted, gen_ai(key), n)
        out.family(name, "counter", help_text, counted)

    tokens: dict[Labels, float] = {}
    for key, row in rows:
        labels = (("tenant", key.tenant), *gen_ai(key))
        for token_type, n in (
            ("input", row.input_tokens),
            ("cached_input", row.cached_input_tokens),
            ("output", row.output_tokens),
            ("reasoning", row.reasoning_tokens),
        ):
            if n:
                _add(tokens, (*labels, ("gen_ai_token_type", token_type)), n)
    out.family(
        "tollgate_tokens_total",
        "counter",
        "Tokens billed (input includes cached; output includes reasoning)",
        tokens,
    )
    cost: dict[Labels, float] = {}
    for key, row in rows:
        if row.cost_micros:
            _add(cost, (("tenant", key.tenant), *gen_ai(key)), row.cost_micros / 1e6)
    out.family("tollgate_cost_usd_total", "counter", "Cost of provider calls in US dollars", cost)

    for name, help_text, buckets, field in (
        (
            "gen_ai_client_operation_duration_seconds",
            "Request duration at the sidecar, first byte in to last byte out",
            DURATION_BUCKETS,
            "latency",
        ),
        (
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time to the first token of the serving attempt",
            TTFT_BUCKETS,
            "ttft",
        ),
        (
            "tollgate_time_to_last_token_seconds",
            "Time to the last token of the serving attempt",
            DURATION_BUCKETS,
            "ttlt",
        ),
    ):
        merged: dict[Labels, DurationSketch] = {}
        for key, row in rows:
            sketch: DurationSketch = getattr(row, field)
            if sketch.count:
                merged.setdefault(gen_ai(key), DurationSketch()).merge(sketch)
        out.histogram(name, help_text, buckets, merged)

    out.family(
        "tollgate_breaker_state",
        "gauge",
        "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
        {(("tollgate_provider", p),): _BREAKER_VALUE[s] for p, s in alerts.breakers.items()},
    )
    snapshot = budgets.snapshot().budgets
    for name, help_text, field in (
        ("tollgate_budget_limit_usd", "Budget limit", "limit_micros"),
        ("tollgate_budget_reserved_usd", "Held by calls in flight", "reserved_micros"),
        ("tollgate_budget_spent_usd", "Spent", "spent_micros"),
        ("tollgate_budget_remaining_usd", "Limit minus spent and reserved", "remaining_micros"),
    ):
        values: dict[Labels, float] = {}
        for b in snapshot:
            micros: int | None = getattr(b, field)
            if micros is not None:
                values[(("budget", b.key),)] = micros / 1e6
        out.family(name, "gauge", help_text, values)
    out.family(
        "tollgate_alert_active",
        "gauge",
        "Alerts in force (1), by rule and subject",
        {(("alert", a.alert), ("subject", a.subject)): 1 for a in alerts.active()},
    )
    out.family(
        "tollgate_projection_position",
        "gauge",
        "Sequence number of the last log event folded into these metrics",
        {(): position},
    )
    return out.text()


def _add(values: dict[Labels, float], labels: Labels, n: float) -> None:
    values[labels] = values.get(labels, 0) + n


class _Exposition:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Mapping[Labels, float]) -> None:
        self._header(name, kind, help_text)
        for labels in sorted(samples):
            self._lines.append(f"{name}{_labels(labels)} {_number(samples[labels])}")

    def histogram(
        self,
        name: str,
        help_text: str,
        bounds: Sequence[float],
        sketches: Mapping[Labels, DurationSketch],
    ) -> None:
        self._header(name, "histogram", help_text)
        for labels in sorted(sketches):
            sketch = sketches[labels]
            for bound in bounds:
                le = (*labels, ("le", _number(bound)))
                count = sketch.count_at_most(bound * 1e9)
                self._lines.append(f"{name}_bucket{_labels(le)} {count}")
            self._lines.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {sketch.count}")
            self._lines.append(f"{name}_sum{_labels(labels)} {_number(sketch.total / 1e9)}")
            self._lines.append(f"{name}_count{_labels(labels)} {sketch.count}")

    def _header(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)
