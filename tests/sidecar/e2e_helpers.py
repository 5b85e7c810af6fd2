"""Helpers shared by the sidecar's end-to-end tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import anyio

from events import Event, RequestCompleted, RequestFailed, StoredEvent
from sidecar._config import Config, parse_config
from sidecar._service import Sidecar

# Two providers, both served by one fake: "alpha" is the primary, "beta" the fallback.
CONFIG_TEMPLATE = """
default_route = "chat"

[server]
socket = "s.sock"
log_content = {log_content}
{server_extra}

[store]
path = "events.db"

[providers.primary]
kind = "openai"
base_url = "{url}"
{key_line}

[providers.backup]
kind = "openai_compatible"
base_url = "{url}"
api_key_env = "TEST_BACKUP_KEY"

[models.alpha]
provider = "primary"
id = "alpha-1"
context_window = 8000
price = {{ input = 1.0, output = 4.0 }}
capabilities = ["streaming", "tools", "structured_output"]

[models.beta]
provider = "backup"
id = "beta-1"
context_window = 16000
price = {{ input = 2.0, output = 8.0 }}
capabilities = ["streaming", "structured_output"]

[classes.main]
members = ["alpha", "beta"]

[models.gamma]
provider = "backup"
id = "gamma-1"
context_window = 32000
price = {{ input = 3.0, output = 12.0 }}

[classes.wide]
members = ["beta", "alpha", "gamma"]

[classes.solo]
members = ["alpha"]
degrade_to = "spare"

[classes.spare]
members = ["beta"]

[routes.chat]
class = "main"
max_tokens = 64
{route_extra}

[routes.wide]
class = "wide"
max_tokens = 64

[routes.strict]
class = "solo"
max_degrade = 0

[routes.lenient]
class = "solo"
max_degrade = 1

# Cheap alpha first, checked; beta when alpha's answer fails a check.
[routes.cascade]
class = "spare"
cascade_from = "solo"

# Fast retries keep the tests quick; breaker tests set their own threshold.
[retry]
backoff_initial_s = 0.01
backoff_max_s = 0.05

[breaker]
threshold = {breaker_threshold}
cooldown_s = {breaker_cooldown_s}

{budgets}
"""


def make_config(
    directory: Path,
    url: str,
    *,
    log_content: bool = False,
    key_line: str = 'api_key_env = "TEST_PROVIDER_KEY"',
    route_extra: str = "",
    breaker_threshold: int = 1000,
    breaker_cooldown_s: float = 15.0,
    budgets: str = "",
    server_extra: str = "",
) -> Config:
    text = config_text(
        url,
        server_extra=server_extra,
        log_content=log_content,
        key_line=key_line,
        route_extra=route_extra,
        breaker_threshold=breaker_threshold,
        breaker_cooldown_s=breaker_cooldown_s,
        budgets=budgets,
    )
    return parse_config(text, base_dir=directory)


def config_text(
    url: str,
    *,
    log_content: bool = False,
    key_line: str = 'api_key_env = "TEST_PROVIDER_KEY"',
    route_extra: str = "",
    breaker_threshold: int = 1000,
    breaker_cooldown_s: float = 15.0,
    budgets: str = "",
    server_extra: str = "",
) -> str:
    return CONFIG_TEMPLATE.format(
        budgets=budgets,
        server_extra=server_extra,
        url=url,
        log_content=str(log_content).lower(),
        key_line=key_line,
        route_extra=route_extra,
        breaker_threshold=breaker_threshold,
        breaker_cooldown_s=breaker_cooldown_s,
    )


SidecarFactory = Callable[..., contextlib.AbstractAsyncContextManager[Sidecar]]

TERMINAL = (RequestCompleted, RequestFailed)


async def request_events(sidecar: Sidecar, request_id: str) -> list[StoredEvent]:
    """The request's events once its terminal event is committed (the executor doesn't wait)."""
    with anyio.fail_after(5):
        while True:
            stored = await sidecar.store.read_request(request_id)
            if stored and isinstance(stored[-1].event, TERMINAL):
                return list(stored)
            await anyio.sleep(0.01)


def kinds(events: list[StoredEvent]) -> list[str]:
    return [type(s.event).__name__ for s in events]


def only(events: list[StoredEvent], kind: type[Event]) -> list[Event]:
    return [s.event for s in events if isinstance(s.event, kind)]
