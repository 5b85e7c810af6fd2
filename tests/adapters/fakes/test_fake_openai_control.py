"""The fake's control API: scripting behaviour, fault schedules, counters and the request log."""

from typing import Any

import aiohttp
import msgspec
import pytest

from adapters.fakes import (
    DropFault,
    FakeControlError,
    FakeOpenAISettings,
    FakeServer,
    ModelBehaviour,
    StatusFault,
    serve_fake_openai,
)


def body_for(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def post_status(http: aiohttp.ClientSession, fake: FakeServer, body: Any) -> int:
    async with http.post(fake.base_url + "/chat/completions", json=body) as resp:
        await resp.read()
        return resp.status


async def test_counts_per_model_and_outcome(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model(
        "flaky", {"faults": [{"kind": "status", "status": 503, "times": 2}]}
    )
    statuses = [await post_status(http, fake, body_for("flaky")) for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert await post_status(http, fake, body_for("steady")) == 200
    async with aiohttp.ClientSession() as anonymous:
        assert await post_status(anonymous, fake, body_for("steady")) == 401

    stats = await fake.control.stats()
    assert stats.requests == 5
    assert stats.models["flaky"].requests == 3
    assert stats.models["flaky"].outcomes == {"http_503": 2, "ok": 1}
    assert stats.models["steady"].outcomes == {"ok": 1, "http_401": 1}
    assert "never-called" not in stats.models


async def test_unparseable_requests_count_under_unknown(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    async with http.post(fake.base_url + "/chat/completions", data=b"nope") as resp:
        assert resp.status == 400
    # A body that names its model but is otherwise invalid still counts for that model.
    assert await post_status(http, fake, {"model": "m", "messages": 5}) == 400
    stats = await fake.control.stats()
    assert stats.models["<unknown>"].outcomes == {"http_400": 1}
    assert stats.models["m"].outcomes == {"http_400": 1}


async def test_rate_faults_are_reproducible_with_a_seed(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    async def pattern(seed: int) -> list[int]:
        await fake.control.set_model(
            "m", {"seed": seed, "faults": [{"kind": "status", "status": 500, "rate": 0.5}]}
        )
        return [await post_status(http, fake, body_for("m")) for _ in range(24)]

    first = await pattern(7)
    assert set(first) == {200, 500}
    assert await pattern(7) == first  # re-setting the behaviour re-seeds the RNG
    assert await pattern(8) != first


async def test_rate_and_times_combine(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model(
        "m", {"faults": [{"kind": "status", "status": 500, "rate": 1.0, "times": 2}]}
    )
    statuses = [await post_status(http, fake, body_for("m")) for _ in range(4)]
    assert statuses == [500, 500, 200, 200]


async def test_first_firing_fault_wins(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model(
        "m",
        {
            "faults": [
                {"kind": "status", "status": 429, "times": 1},
                {"kind": "status", "status": 503, "times": 1},
            ]
        },
    )
    statuses = [await post_status(http, fake, body_for("m")) for _ in range(3)]
    assert statuses == [429, 503, 200]


async def test_put_overlays_the_server_default() -> None:
    default = ModelBehaviour(answer_tokens=3, ttft_s=0.0, seed=5)
    async with serve_fake_openai(FakeOpenAISettings(default=default)) as fake:
        effective = await fake.control.set_model("m", {"chunks": 2})
        assert effective.answer_tokens == 3
        assert effective.chunks == 2
        assert effective.seed == 5
        assert (await fake.control.get_model("m")) == effective
        assert (await fake.control.get_model("other")) == default


async def test_set_model_takes_a_struct(fake: FakeServer) -> None:
    behaviour = ModelBehaviour(
        answer_tokens=2,
        faults=(StatusFault(status=429, retry_after_s=1.5, times=1), DropFault(after_chunks=1)),
    )
    assert await fake.control.set_model("m", behaviour) == behaviour


@pytest.mark.parametrize(
    "patch",
    [
        {"answer_tokenz": 3},
        {"answer_tokens": -1},
        {"ttft_s": "soon"},
        {"faults": [{"kind": "explode"}]},
        {"faults": [{"kind": "status", "status": 200}]},
        {"faults": [{"kind": "drop", "rate": 1.5}]},
        {"faults": [{"kind": "status", "error": "no_such_error"}]},
    ],
)
async def test_invalid_behaviour_is_rejected(fake: FakeServer, patch: dict[str, Any]) -> None:
    with pytest.raises(FakeControlError, match="400"):
        await fake.control.set_model("m", patch)


async def test_invalid_json_behaviour_is_rejected(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    async with http.put(fake.url + "/_fake/models/m", data=b"[1, 2]") as resp:
        assert resp.status == 400


async def test_delete_and_reset(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model("a", {"faults": [{"kind": "status", "status": 500}]})
    await fake.control.set_model("b", {"faults": [{"kind": "status", "status": 500}]})
    assert await post_status(http, fake, body_for("a")) == 500

    await fake.control.clear_model("a")
    assert await post_status(http, fake, body_for("a")) == 200
    assert await post_status(http, fake, body_for("b")) == 500

    await fake.control.reset()
    stats = await fake.control.stats()
    assert stats.requests == 0
    assert stats.models == {}
    assert await fake.control.requests() == []
    assert await post_status(http, fake, body_for("b")) == 200


async def test_request_log_keeps_bodies_but_never_keys(
    http: aiohttp.ClientSession, fake: FakeServer, api_key: str
) -> None:
    body = body_for("m", stream=True, max_completion_tokens=9, metadata={"task": "t"})
    assert await post_status(http, fake, body) == 200
    assert await post_status(http, fake, body_for("other")) == 200

    [entry] = await fake.control.requests("m")
    assert entry.model == "m"
    assert entry.stream is True
    assert entry.outcome == "ok"
    assert entry.request_id.startswith("req_")
    assert entry.body_json() == body
    assert {k.lower() for k in entry.headers}.isdisjoint({"authorization"})
    async with http.get(fake.url + "/_fake/requests") as resp:
        raw = await resp.read()
    assert api_key.encode() not in raw
    assert len(msgspec.json.decode(raw)["requests"]) == 2


async def test_model_names_with_slashes(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    model = "meta-llama/Llama-3.3-70B"
    await fake.control.set_model(model, {"faults": [{"kind": "status", "status": 503}]})
    assert await post_status(http, fake, body_for(model)) == 503
    assert (await fake.control.stats()).models[model].outcomes == {"http_503": 1}


async def test_request_log_can_be_disabled() -> None:
    async with (
        serve_fake_openai(FakeOpenAISettings(request_log_size=0)) as fake,
        aiohttp.ClientSession() as http,
    ):
        assert await post_status(http, fake, body_for("m")) == 200
        assert await fake.control.requests() == []
        assert (await fake.control.stats()).requests == 1
