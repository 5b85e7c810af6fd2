"""The configuration file: one TOML document, validated at start-up.

Every problem is reported with the key it concerns (``models.gpt-4o.context_window: ...``), so an
operator can fix the file without reading code. Relative paths are relative to the file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import msgspec

from projections import AlertPolicy

from ._breaker import BreakerPolicy
from ._retry import RetryPolicy

__all__ = [
    "BudgetConfig",
    "ClassConfig",
    "Config",
    "ConfigError",
    "ModelConfig",
    "NatsConfig",
    "PriceConfig",
    "ProviderConfig",
    "RouteConfig",
    "ServerConfig",
    "StoreConfig",
    "config_hash",
    "load_config",
    "parse_config",
]

Capability = Literal["vision", "tools", "structured_output", "streaming"]
ProviderKind = Literal["openai", "anthropic", "gemini", "xai", "openai_compatible"]

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the problem."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class ServerConfig(_Section, frozen=True):
    socket: str = "tollgate.sock"
    # Owner-only by default: whoever can connect can spend the budget.
    socket_mode: int = 0o600
    max_body_bytes: int = 10 * 1024 * 1024
    default_tenant: str = "default"
    # Store prompts and completions in the log. Off: the log keeps a hash and sizes only.
    log_content: bool = False
    # On shutdown, requests in flight get this long to finish before they are cancelled.
    shutdown_grace_s: float = 10.0
    # A reservation still unsettled this long after its request's deadline (the sidecar died
    # during the call, say) expires and counts as spent at what it held.
    reservation_grace_s: float = 60.0
    # An optional TCP listener ("host:port") for health, readiness and Prometheus metrics, for
    # probes and scrapers that can't reach a Unix socket. It serves nothing that spends money.
    admin_address: str | None = None


class StoreConfig(_Section, frozen=True):
    # "sqlite": the embedded log (one sidecar). "jetstream": a JetStream stream on the servers
    # of ``[nats]``, shared by every sidecar of the deployment (and their budgets).
    kind: Literal["sqlite", "jetstream"] = "sqlite"
    path: str = "tollgate-events.db"
    # JetStream only: the stream (one per deployment) and its replica count (3 in production).
    stream: str = "TOLLGATE"
    replicas: int = 1
    # Where the projections (usage, alerts, budgets) checkpoint their state; default: beside
    # the SQLite log (``<path>.projections``). A missing or unreadable one means a replay.
    checkpoint: str | None = None
    checkpoint_interval_s: float = 10.0


class NatsConfig(_Section, frozen=True):
    """The NATS connection, shared by the request-reply transport and the JetStream store."""

    # Serve requests over NATS (the Unix socket is always served).
    enabled: bool = False
    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    # Requests arrive on "<subject_prefix>.chat"; sidecars share them through the queue group.
    subject_prefix: str = "tollgate.v1"
    queue_group: str = "tollgate"
    # Credentials: at most one of token, user/password, an nkey seed file, a credentials file.
    # Like API keys, secrets come from the environment or files, never from the config itself.
    token_env: str | None = None
    user: str | None = None
    password_env: str | None = None
    nkey_seed_file: str | None = None
    credentials_file: str | None = None
    # TLS: a CA to trust and, for mutual TLS, a client certificate and key.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    connect_timeout_s: float = 2.0
    # Reconnects wait this long between tries, forever: NATS loss never stops the Unix socket.
    reconnect_wait_s: float = 0.5


class ProviderConfig(_Section, frozen=True):
    kind: ProviderKind
    base_url: str
    # The key is read from the environment or a file, never written in this file.
    api_key_env: str | None = None
    api_key_file: str | None = None
    # The provider's API version where it has one (Anthropic "2023-06-01" or "2026-10-21",
    # Gemini "v1" or "v1beta"); each adapter has a default.
    api_version: str | None = None
    connect_timeout_s: float = 10.0
    max_connections: int = 256
    # Which field carries the output limit. Default: "max_completion_tokens" for OpenAI and
    # xAI, "max_tokens" for self-hosted servers (vLLM, llama.cpp and Ollama know that one).
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] | None = None


class PriceConfig(_Section, frozen=True):
    """USD per million tokens, overriding the bundled price table."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


class ModelConfig(_Section, frozen=True):
    provider: str
    context_window: int
    # The provider's id for the model; defaults to the model's name in this file.
    id: str | None = None
    max_output_tokens: int = 4096
    capabilities: list[Capability] = msgspec.field(default_factory=lambda: ["streaming"])
    tags: list[str] = []
    price: PriceConfig | None = None


class ClassConfig(_Section, frozen=True):
    members: list[str]
    # The class to fall back to when every member is unavailable (the declared degraded path).
    degrade_to: str | None = None
    # How strong the class is, for `tollgate eval routing` (higher: stronger and dearer). Set on
    # every class or none; without tiers, classes are ordered by their first member's price.
    tier: int | None = None


class RouteConfig(_Section, frozen=True):
    model_class: str = msgspec.field(name="class")
    max_tokens: int = 1024
    # How many steps down the degraded path this route may go; 0 fails instead of degrading.
    max_degrade: int = 1
    requires: list[Capability] = []
    require_tags: list[str] = []
    # The whole request, retries and fallbacks included.
    deadline_s: float = 120.0
    # A streamed attempt must get response headers within this time.
    header_timeout_s: float = 10.0
    # ... and its first token within this time; a non-streamed attempt, its whole answer (its
    # headers come only with the answer).
    ttft_timeout_s: float = 60.0
    # The longest silence between two chunks of a stream.
    idle_timeout_s: float = 30.0
    # Overrides retry.max_wait_s: a longer Retry-After falls back instead of waiting.
    max_retry_wait_s: float | None = None
    # A cheaper class to try first: its answer is checked (not empty, not cut at max_tokens,
    # not refused, valid JSON when JSON was asked for) and the request escalates to ``class``
    # when a check fails. Streams are held back until the check, so they start later.
    cascade_from: str | None = None


class BudgetConfig(_Section, frozen=True):
    """A spending limit. ``scope`` says what it is counted per: one budget for everything
    (``global``), or one per tenant, route or model class, each with ``limit_usd`` unless
    ``overrides`` names that tenant, route or class. ``period`` resets it: each UTC ``day``,
    each UTC ``month``, or never (``total``)."""

    limit_usd: float
    scope: Literal["global", "tenant", "route", "class"] = "global"
    period: Literal["day", "month", "total"] = "day"
    overrides: dict[str, float] = {}


class Config(_Section, frozen=True):
    default_route: str
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    classes: dict[str, ClassConfig]
    routes: dict[str, RouteConfig]
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    nats: NatsConfig = NatsConfig()
    alerts: AlertPolicy = AlertPolicy()
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    budgets: dict[str, BudgetConfig] = {}


_NAMED_TABLES: tuple[tuple[str, type], ...] = (
    ("providers", ProviderConfig),
    ("models", ModelConfig),
    ("classes", ClassConfig),
    ("routes", RouteConfig),
    ("budgets", BudgetConfig),
)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    return parse_config(text, base_dir=path.parent, source=str(path))


def parse_config(text: bytes | str, *, base_dir: Path, source: str = "<config>") -> Config:
    try:
        raw = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    # msgspec locates an error inside a table of named entries as "providers[...]"; checking
    # each entry on its own lets the message name it ("providers.openai.kind").
    problems = [
        _keyed(str(invalid), f"{section}.{name}")
        for section, entry_type in _NAMED_TABLES
        if isinstance(raw.get(section), dict)
        for name, entry in raw[section].items()
        if (invalid := _validation_error(entry, entry_type)) is not None
    ]
    if not problems:
        try:
            config = msgspec.convert(raw, Config)
        except msgspec.ValidationError as exc:
            problems = [_keyed(str(exc), "")]
        else:
            problems = _check(config)
    if problems:
        raise ConfigError(f"{source}: " + "\n  ".join(problems))
    return _resolve_paths(config, base_dir)


def config_hash(config: Config) -> str:
    """A short, stable digest of the effective config, stamped on every event."""
    encoded = msgspec.json.encode(config, order="sorted")
    return hashlib.sha256(encoded).hexdigest()[:16]


def _validation_error(value: object, entry_type: type) -> msgspec.ValidationError | None:
    try:
        msgspec.convert(value, entry_type)
    except msgspec.ValidationError as exc:
        return exc
    return None


def _keyed(message: str, prefix: str) -> str:
    """Lead with the key: msgspec says "Expected `int`, got `str` - at `$.context_window`"."""
    text, sep, where = message.rpartition(" - at `$")
    if not sep:
        text, where = message, ""
    key = prefix + where.rstrip("`")
    return f"{key.lstrip('.') or '(top level)'}: {text}"


def _check(config: Config) -> list[str]:
    problems: list[str] = []

    def need(ok: bool, key: str, problem: str) -> None:
        if not ok:
            problems.append(f"{key}: {problem}")

    def known(kind: str, names: Iterable[str]) -> str:
        return f"(known {kind}: {', '.join(sorted(names)) or 'none'})"

    for name, provider in config.providers.items():
        key = f"providers.{name}"
        need(bool(_NAME.match(name)), key, "invalid name")
        need(
            provider.base_url.startswith(("http://", "https://")),
            f"{key}.base_url",
            "must start with http:// or https://",
        )
        need(
            not (provider.api_key_env and provider.api_key_file),
            key,
            "set api_key_env or api_key_file, not both",
        )
        need(provider.connect_timeout_s > 0, f"{key}.connect_timeout_s", "must be positive")
        need(provider.max_connections > 0, f"{key}.max_connections", "must be positive")

    for name, model in config.models.items():
        key = f"models.{name}"
        need(bool(_NAME.match(name)), key, "invalid name")
        need(
            model.provider in config.providers,
            f"{key}.provider",
            f"unknown provider {model.provider!r} {known('providers', config.providers)}",
        )
        need(model.context_window > 0, f"{key}.context_window", "must be positive")
        need(model.max_output_tokens > 0, f"{key}.max_output_tokens", "must be positive")
        need(
            model.max_output_tokens <= model.context_window,
            f"{key}.max_output_tokens",
            "must not exceed context_window",
        )
        if model.price is not None:
            prices = (model.price.input, model.price.output, model.price.cached_input or 0.0)
            need(all(p >= 0 for p in prices), f"{key}.price", "prices must not be negative")

    for name, cls in config.classes.items():
        key = f"classes.{name}"
        need(bool(cls.members), f"{key}.members", "must list at least one model")
        for member in cls.members:
            need(
                member in config.models,
                f"{key}.members",
                f"unknown model {member!r} {known('models', config.models)}",
            )
        if cls.degrade_to is not None:
            need(
                cls.degrade_to in config.classes,
                f"{key}.degrade_to",
                f"unknown class {cls.degrade_to!r} {known('classes', config.classes)}",
            )
        need(not _degrades_in_a_cycle(config, name), f"{key}.degrade_to", "degrades in a cycle")

    for name, route in config.routes.items():
        key = f"routes.{name}"
        need(
            route.model_class in config.classes,
            f"{key}.class",
            f"unknown class {route.model_class!r} {known('classes', config.classes)}",
        )
        if route.cascade_from is not None:
            need(
                route.cascade_from in config.classes,
                f"{key}.cascade_from",
                f"unknown class {route.cascade_from!r} {known('classes', config.classes)}",
            )
        need(route.max_tokens > 0, f"{key}.max_tokens", "must be positive")
        need(route.max_degrade >= 0, f"{key}.max_degrade", "must not be negative")
        for field in ("deadline_s", "header_timeout_s", "ttft_timeout_s", "idle_timeout_s"):
            need(getattr(route, field) > 0, f"{key}.{field}", "must be positive")
        if route.max_retry_wait_s is not None:
            need(route.max_retry_wait_s >= 0, f"{key}.max_retry_wait_s", "must not be negative")

    for name, budget in config.budgets.items():
        key = f"budgets.{name}"
        need(bool(_NAME.match(name)) and "/" not in name, key, "invalid name")
        need(budget.limit_usd >= 0, f"{key}.limit_usd", "must not be negative")
        for value, limit in budget.overrides.items():
            need(limit >= 0, f"{key}.overrides.{value}", "must not be negative")

    need(
        config.default_route in config.routes,
        "default_route",
        f"unknown route {config.default_route!r} {known('routes', config.routes)}",
    )
    server = config.server
    need(0 <= server.socket_mode <= 0o777, "server.socket_mode", "must be a file mode like 0o600")
    need(server.max_body_bytes > 0, "server.max_body_bytes", "must be positive")
    need(server.shutdown_grace_s >= 0, "server.shutdown_grace_s", "must not be negative")
    need(server.reservation_grace_s >= 0, "server.reservation_grace_s", "must not be negative")
    if server.admin_address is not None:
        need(
            _HOST_PORT.match(server.admin_address) is not None,
            "server.admin_address",
            'must be "host:port", e.g. "127.0.0.1:9464"',
        )
    retry = config.retry
    for field in ("rate_limited", "overloaded", "timeout", "server_error"):
        need(getattr(retry, field) >= 0, f"retry.{field}", "must not be negative")
    need(retry.backoff_initial_s >= 0, "retry.backoff_initial_s", "must not be negative")
    need(
        retry.backoff_max_s >= retry.backoff_initial_s,
        "retry.backoff_max_s",
        "must be at least backoff_initial_s",
    )
    need(0 <= retry.jitter <= 1, "retry.jitter", "must be between 0 and 1")
    need(retry.max_wait_s >= 0, "retry.max_wait_s", "must not be negative")
    breaker = config.breaker
    need(breaker.threshold >= 1, "breaker.threshold", "must be at least 1")
    need(breaker.window_s > 0, "breaker.window_s", "must be positive")
    need(breaker.cooldown_s >= 0, "breaker.cooldown_s", "must not be negative")
    need(breaker.probes >= 1, "breaker.probes", "must be at least 1")
    need(bool(_NAME.match(server.default_tenant)), "server.default_tenant", "invalid name")
    need(config.store.replicas in (1, 3, 5), "store.replicas", "must be 1, 3 or 5")
    need(
        config.store.checkpoint_interval_s > 0,
        "store.checkpoint_interval_s",
        "must be positive",
    )
    alerts = config.alerts
    for field in ("degraded_share", "unrouted_share"):
        need(0 <= getattr(alerts, field) <= 1, f"alerts.{field}", "must be between 0 and 1")
    for field in ("degraded_window_s", "unrouted_window_s"):
        need(getattr(alerts, field) > 0, f"alerts.{field}", "must be positive")
    for field in ("degraded_min_requests", "unrouted_min_requests"):
        need(getattr(alerts, field) >= 1, f"alerts.{field}", "must be at least 1")
    need(
        all(0 < t <= 1 for t in alerts.budget_thresholds),
        "alerts.budget_thresholds",
        "each must be a fraction in (0, 1]",
    )
    nats = config.nats
    need(bool(nats.servers), "nats.servers", "must list at least one server")
    for url in nats.servers:
        need(
            url.startswith(("nats://", "tls://", "ws://", "wss://")),
            "nats.servers",
            f"{url!r} must start with nats://, tls://, ws:// or wss://",
        )
    credentials = [
        nats.token_env,
        nats.user or nats.password_env,
        nats.nkey_seed_file,
        nats.credentials_file,
    ]
    need(
        sum(c is not None for c in credentials) <= 1,
        "nats",
        "set at most one of token_env, user/password_env, nkey_seed_file, credentials_file",
    )
    need(
        (nats.tls_cert_file is None) == (nats.tls_key_file is None),
        "nats.tls_cert_file",
        "set tls_cert_file and tls_key_file together",
    )
    need(nats.connect_timeout_s > 0, "nats.connect_timeout_s", "must be positive")
    need(nats.reconnect_wait_s >= 0, "nats.reconnect_wait_s", "must not be negative")
    return problems


def _degrades_in_a_cycle(config: Config, start: str) -> bool:
    seen = {start}
    current = config.classes[start].degrade_to
    while current is not None and current in config.classes:
        if current in seen:
            return True
        seen.add(current)
        current = config.classes[current].degrade_to
    return False


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    def resolve(value: str) -> str:
        return str(base_dir / value) if not Path(value).is_absolute() else value

    server = msgspec.structs.replace(config.server, socket=resolve(config.server.socket))
    checkpoint = config.store.checkpoint
    store = msgspec.structs.replace(
        config.store,
        path=resolve(config.store.path),
        checkpoint=resolve(checkpoint or f"{config.store.path}.projections"),
    )
    nats = config.nats
    nats_files = {
        field: resolve(value)
        for field in (
            "nkey_seed_file",
            "credentials_file",
            "tls_ca_file",
            "tls_cert_file",
            "tls_key_file",
        )
        if (value := getattr(nats, field)) is not None
    }
    nats = msgspec.structs.replace(nats, **nats_files)
    providers = {
        name: msgspec.structs.replace(p, api_key_file=resolve(p.api_key_file))
        if p.api_key_file
        else p
        for name, p in config.providers.items()
    }
    return msgspec.structs.replace(
        config, server=server, store=store, nats=nats, providers=providers
    )
