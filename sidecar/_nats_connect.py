"""The NATS connection: one per sidecar, shared by the request-reply transport and the JetStream
store.

Credentials come from the environment or from files named in ``[nats]``, never from the config
itself, and never reach a log line or an error message: errors name the variable, the file or
the server (with any ``user:password@`` in its URL masked). Once connected, the client
reconnects forever, with exponential backoff and jitter, and re-subscribes by itself; every
change of state is logged.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import nats.errors
from nats.aio.client import Client, Server

from ._config import Config, ConfigError, NatsConfig

__all__ = [
    "NatsAuthError",
    "NatsConnectError",
    "NatsLink",
    "NatsUnreachableError",
    "connect_nats",
    "connect_options",
    "open_nats_link",
    "redact_url",
]

log = logging.getLogger("tollgate.nats")

# Reconnect waits double from ``reconnect_wait_s`` up to this cap (or ``reconnect_wait_s`` if
# larger): a restarted server is found again within seconds, and a long outage costs a try
# every few seconds, not a busy loop.
RECONNECT_WAIT_CAP_S = 5.0
# +-20 %: sidecars that lost the same server don't all come back in the same instant.
RECONNECT_JITTER = 0.2
# The server's words for refused credentials (nats-server's -ERR lines).
_AUTH_ERRORS = ("authorization violation", "authentication expired", "user authentication")


class NatsConnectError(Exception):
    """NATS could not be reached or refused us; the message names servers, never secrets."""


class NatsAuthError(NatsConnectError):
    """The server refused the credentials: a configuration problem, not an outage."""


class NatsUnreachableError(NatsConnectError):
    """No server answered within the time allowed."""


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: safe to log."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect_options(config: NatsConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """nats-py's connect() keyword arguments for the credentials and TLS of ``config``.

    Raises :class:`ConfigError` naming the key, the variable or the file (not its content) when a
    secret is missing or unreadable, so start-up fails before anything connects.
    """
    options: dict[str, Any] = {}
    if config.token_env:
        options["token"] = _from_env(environ, config.token_env, "nats.token_env")
    if config.user:
        options["user"] = config.user
        if config.password_env:
            options["password"] = _from_env(environ, config.password_env, "nats.password_env")
    elif config.password_env:
        raise ConfigError("nats.password_env: set nats.user too")
    if config.nkey_seed_file:
        _readable(config.nkey_seed_file, "nats.nkey_seed_file")
        options["nkeys_seed"] = config.nkey_seed_file
    if config.credentials_file:
        _readable(config.credentials_file, "nats.credentials_file")
        options["user_credentials"] = config.credentials_file
    if config.tls_ca_file or config.tls_cert_file:
        options["tls"] = _tls_context(config)
    return options


def _from_env(environ: Mapping[str, str], name: str, key: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{key}: environment variable {name} is not set or empty")
    return value


def _readable(path: str, key: str) -> None:
    try:
        with open(path, "rb") as file:
            empty = not file.read(1)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc
    if empty:
        raise ConfigError(f"{key}: {path} is empty")


def _tls_context(config: NatsConfig) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file)
        if config.tls_cert_file and config.tls_key_file:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        # The message of an SSLError names the problem (e.g. "PEM lib"), not key material.
        raise ConfigError(f"nats.tls_*: cannot load the TLS files: {exc}") from exc
    return context


def _is_auth_error(exc: BaseException) -> bool:
    if isinstance(exc, nats.errors.AuthorizationError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _AUTH_ERRORS)


class _Refused(Exception):
    """Raised from the error callback to end nats-py's first-connect loop on refused
    credentials (the loop would otherwise retry them forever)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _StateLog:
    """The connection's callbacks: log each change of state once, not every failed retry."""

    def __init__(self, servers: Sequence[str], client: Client) -> None:
        self.servers = ", ".join(redact_url(s) for s in servers)
        self.connecting = True
        self.last_error: str | None = None
        self.client = client

    async def on_error(self, exc: Exception) -> None:
        if self.connecting and _is_auth_error(exc):
            raise _Refused(exc)
        message = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if message != self.last_error:
            # A server that stays down fails the same way on every try: say it once.
            log.warning("NATS (%s): %s", self.servers, message)
        self.last_error = message

    async def on_disconnected(self) -> None:
        # Also called on a deliberate close(), which sets the closed state first.
        if not self.connecting and not self.client.is_closed:
            log.warning("NATS connection lost (%s); reconnecting", self.servers)

    async def on_reconnected(self) -> None:
        self.last_error = None
        url = self.client.connected_url
        log.info("NATS reconnected to %s", redact_url(url.geturl()) if url else self.servers)

    async def on_closed(self) -> None:
        log.info("NATS connection closed (%s)", self.servers)


_ChooseServer = Callable[[list[Server], dict[str, Any]], tuple[Server | None, float]]


def _backoff(base_s: float) -> _ChooseServer:
    """nats-py's reconnect hook: the least-tried server, after a wait that doubles per failed
    try of that server."""
    cap = max(base_s, RECONNECT_WAIT_CAP_S)

    def choose(servers: list[Server], info: dict[str, Any]) -> tuple[Server | None, float]:
        server = min(servers, key=lambda s: s.reconnects)
        wait = min(cap, base_s * 2 ** min(server.reconnects, 16))
        return server, wait * random.uniform(1 - RECONNECT_JITTER, 1 + RECONNECT_JITTER)

    return choose


async def connect_nats(
    config: NatsConfig,
    environ: Mapping[str, str],
    *,
    wait_s: float | None,
    name: str = "tollgate",
) -> Client:
    """A client connected to one of ``config.servers``.

    Waits up to ``wait_s`` (forever if None) for a server to answer, retrying every
    ``reconnect_wait_s``. Raises :class:`NatsAuthError` at once if a server refuses the
    credentials, :class:`NatsUnreachableError` when the wait runs out, and
    :class:`ConfigError` when a secret is missing. Once connected, reconnects never give up.
    """
    options = connect_options(config, environ)
    # nats-py annotates these as int, but it takes (and uses) fractional seconds.
    options["connect_timeout"] = config.connect_timeout_s
    options["reconnect_time_wait"] = config.reconnect_wait_s
    client = Client()
    state = _StateLog(config.servers, client)
    try:
        with anyio.move_on_after(float("inf") if wait_s is None else wait_s):
            await client.connect(
                servers=list(config.servers),
                name=name,
                reconnect_to_server_handler=_backoff(config.reconnect_wait_s),
                # Never give up: NATS loss must not end the sidecar (the Unix socket serves on).
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                error_cb=state.on_error,
                disconnected_cb=state.on_disconnected,
                reconnected_cb=state.on_reconnected,
                closed_cb=state.on_closed,
                **options,
            )
            state.connecting = False
            url = client.connected_url
            log.info("NATS connected to %s", redact_url(url.geturl()) if url else state.servers)
            return client
    except _Refused as refused:
        await _close_quietly(client)
        raise NatsAuthError(
            f"NATS at {state.servers} refused the credentials ({refused.cause}); "
            "check nats.token_env, nats.user/password_env, nats.nkey_seed_file or "
            "nats.credentials_file"
        ) from None
    except BaseException:
        await _close_quietly(client)
        raise
    await _close_quietly(client)
    raise NatsUnreachableError(
        f"no NATS server answered within {wait_s} s at {state.servers}"
        + (f" (last error: {state.last_error})" if state.last_error else "")
    )


async def _close_quietly(client: Client) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await client.close()
        except Exception as exc:  # a half-open client may fail to close; it holds nothing
            log.debug("closing an unconnected NATS client: %r", exc)


# With the JetStream store, nothing works without NATS: start-up waits this long, then fails.
STARTUP_WAIT_S = 30.0
# On exit, pending replies get this long to leave before the connection is closed anyway.
CLOSE_TIMEOUT_S = 5.0


class NatsLink:
    """The sidecar's one NATS connection: there from start-up, or (when only the transport
    needs it and NATS was unreachable then) once the background connect succeeds."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self._ready = anyio.Event()

    def _connected(self, client: Client) -> None:
        self.client = client
        self._ready.set()

    async def wait(self) -> Client:
        """The client, once connected."""
        await self._ready.wait()
        assert self.client is not None
        return self.client


@contextlib.asynccontextmanager
async def open_nats_link(
    config: Config, environ: Mapping[str, str]
) -> AsyncIterator[NatsLink | None]:
    """The sidecar's NATS connection for its lifetime (None when neither the transport nor the
    event log uses NATS); drained and closed on exit.

    With the event log on JetStream nothing works without NATS: start-up waits up to
    :data:`STARTUP_WAIT_S`, then fails with :class:`NatsUnreachableError`. For the transport
    alone there is one try of ``connect_timeout_s``; if no server answers, the sidecar starts
    anyway (the Unix socket needs no NATS) and connects in the background. Refused credentials
    fail start-up either way: that is a configuration error, not an outage.
    """
    required = config.store.kind == "jetstream"
    if not (required or config.nats.enabled):
        yield None
        return
    nats_config = config.nats
    link = NatsLink()
    # Connected before the task group, so that a start-up error comes out as itself.
    if required:
        link._connected(await connect_nats(nats_config, environ, wait_s=STARTUP_WAIT_S))
    else:
        try:
            client = await connect_nats(nats_config, environ, wait_s=nats_config.connect_timeout_s)
        except NatsUnreachableError as exc:
            log.warning("%s; serving the Unix socket, connecting to NATS in the background", exc)
        else:
            link._connected(client)
    try:
        async with anyio.create_task_group() as tasks:
            if link.client is None:
                tasks.start_soon(_connect_later, link, nats_config, environ)
            try:
                yield link
            finally:
                tasks.cancel_scope.cancel()
    finally:
        if link.client is not None:
            await _close(link.client)


async def _connect_later(link: NatsLink, config: NatsConfig, environ: Mapping[str, str]) -> None:
    while True:
        try:
            link._connected(await connect_nats(config, environ, wait_s=None))
            return
        except NatsAuthError as exc:
            # Credentials may be rotated while we wait: keep trying, slowly.
            log.error("%s", exc)
            await anyio.sleep(RECONNECT_WAIT_CAP_S)


async def _close(client: Client) -> None:
    """Drain (pending replies leave first), or close at once if draining can't finish."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_S):
        try:
            await client.drain()
            return
        except Exception as exc:  # reconnecting or already closed: nothing left to drain
            log.debug("NATS drain: %r", exc)
    await _close_quietly(client)
