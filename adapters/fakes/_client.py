"""A small async client for a running fake's control API (``/_fake/``)."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Self
from urllib.parse import quote

import aiohttp
import msgspec

from ._behaviour import ModelBehaviour
from ._state import FakeStats, LoggedRequest

__all__ = ["FakeControlError", "FakeOpenAIControl"]


class FakeControlError(RuntimeError):
    """The control API refused a call (e.g. an invalid behaviour)."""


class _RequestLog(msgspec.Struct):
    requests: list[LoggedRequest]


class FakeOpenAIControl:
    """Scripts a fake OpenAI server over HTTP. ``url`` is the server root (no ``/v1``).

    Uses ``session`` if given (and leaves it open), else owns one until :meth:`aclose`.
    """

    def __init__(self, url: str, session: aiohttp.ClientSession | None = None) -> None:
        self._url = url.rstrip("/") + "/_fake"
        self._session = session
        self._owns_session = session is None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        headers = {"Content-Type": "application/json"} if body is not None else None
        async with self._http().request(
            method, self._url + path, data=body, headers=headers
        ) as resp:
            data = await resp.read()
            if resp.status >= 400:
                raise FakeControlError(
                    f"{method} {path}: {resp.status} {data.decode(errors='replace')}"
                )
            return data

    async def set_model(
        self, model: str, behaviour: ModelBehaviour | Mapping[str, object]
    ) -> ModelBehaviour:
        """Set ``model``'s behaviour: a whole :class:`ModelBehaviour`, or a mapping of fields
        overlaid on the server's default. Re-arms its faults and re-seeds its RNG."""
        fields = behaviour if isinstance(behaviour, ModelBehaviour) else dict(behaviour)
        body = msgspec.json.encode(fields)
        data = await self._call("PUT", "/models/" + quote(model, safe=""), body)
        return msgspec.json.decode(data, type=ModelBehaviour)

    async def get_model(self, model: str) -> ModelBehaviour:
        data = await self._call("GET", "/models/" + quote(model, safe=""))
        return msgspec.json.decode(data, type=ModelBehaviour)

    async def clear_model(self, model: str) -> None:
        await self._call("DELETE", "/models/" + quote(model, safe=""))

    async def reset(self) -> None:
        await self._call("POST", "/reset")

    async def stats(self) -> FakeStats:
        return msgspec.json.decode(await self._call("GET", "/stats"), type=FakeStats)

    async def requests(self, model: str | None = None) -> list[LoggedRequest]:
        path = "/requests" if model is None else "/requests?model=" + quote(model, safe="")
        return msgspec.json.decode(await self._call("GET", path), type=_RequestLog).requests

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
