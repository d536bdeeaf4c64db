"""Load on loopback (bounded in time): a uvicorn server over the fake engine, 4x more concurrent clients
than slots, streaming and not, some disconnecting early; every request completes or gets a 429, none
hangs, slots are all free afterwards, and the process's memory stays flat over rounds. The official
client sees a 429 as its RateLimitError."""

from __future__ import annotations

import asyncio
import os
import random
import time

import httpx
import openai
import pytest

from gemma_runtime.serve.server import create_app
from tests.runtime.serve.helpers import fake_service, running_server

SLOTS = 4
CLIENTS = 4 * SLOTS
ROUNDS = 6
REQUEST_TIMEOUT_S = 30


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _one(client: httpx.AsyncClient, rng: random.Random) -> str:
    body = {
        "model": "tiny",
        "prompt": [rng.randint(10, 900)] * rng.randint(1, 60),
        "max_tokens": rng.randint(1, 40),
    }
    kind = rng.choice(["plain", "stream", "disconnect"])
    if kind == "plain":
        response = await client.post("/v1/completions", json=body)
        if response.status_code == 200:
            assert response.json()["choices"][0]["finish_reason"] in {"length", "stop"}
        return str(response.status_code)
    async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        if response.status_code != 200:
            await response.aread()
            return str(response.status_code)
        lines = []
        async for line in response.aiter_lines():
            lines.append(line)
            if kind == "disconnect" and len(lines) >= 2:
                return "disconnected"
        assert lines[-2] == "data: [DONE]" or lines[-1] == "data: [DONE]"
        return "200"


async def _round(url: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        jobs = [
            asyncio.wait_for(_one(client, random.Random(rng.random())), REQUEST_TIMEOUT_S)
            for _ in range(CLIENTS)
        ]
        return await asyncio.gather(*jobs)


@pytest.mark.timeout(180)
def test_overload_completes_or_refuses_and_memory_stays_flat() -> None:
    service, _ = fake_service(slots=SLOTS, max_queued=SLOTS, step_delay=0.005)
    with running_server(create_app(service)) as url:
        assert service.wait_ready(10)
        outcomes: list[str] = []
        memory = []
        for n in range(ROUNDS):
            outcomes += asyncio.run(_round(url, n))
            memory.append(_rss_mb())
        scheduler = service.scheduler
        assert scheduler is not None
        for _ in range(100):  # disconnected requests are cancelled within a step or two
            if scheduler.running == 0 and not scheduler.waiting:
                break
            asyncio.run(asyncio.sleep(0.05))
        assert scheduler.running == 0
        assert not scheduler.waiting
        assert set(outcomes) <= {"200", "429", "disconnected"}
        assert outcomes.count("200") >= CLIENTS  # most rounds serve at least the slots' worth
        assert "429" in outcomes
        print(f"outcomes: { {k: outcomes.count(k) for k in set(outcomes)} }, RSS MB per round: {memory}")
        assert memory[-1] - memory[1] < 30  # after the first round warmed everything up

        refused = asyncio.run(_openai_round(url))
        assert refused
        assert all(e.status_code == 429 for e in refused)


async def _openai_round(url: str) -> list[openai.RateLimitError]:
    """Concurrent requests through the official async client: the 429s arrive as its RateLimitError."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    refused: list[openai.RateLimitError] = []

    async def one() -> None:
        try:
            await client.completions.create(model="tiny", prompt=[5], max_tokens=40)
        except openai.RateLimitError as err:
            refused.append(err)

    try:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(CLIENTS))), REQUEST_TIMEOUT_S)
    finally:
        await client.close()
    return refused


def test_a_client_that_goes_away_frees_its_slot_at_once() -> None:
    service, _ = fake_service(slots=1, max_queued=1, step_delay=0.01)
    with running_server(create_app(service)) as url:
        assert service.wait_ready(10)
        scheduler = service.scheduler
        assert scheduler is not None
        body = {"model": "tiny", "prompt": [5], "max_tokens": 200}  # about 2 s of steps
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/completions", json=body, timeout=0.3)
        started = time.monotonic()
        while scheduler.running and time.monotonic() - started < 5:
            time.sleep(0.02)
        assert scheduler.running == 0
        assert time.monotonic() - started < 1.5  # well before the 200 tokens would have finished
