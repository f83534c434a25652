"""/v1/label on one large request: items a second, in process (the ASGI app driven through httpx's ASGI
transport, no sockets), with a judge that answers at once (an httpx MockTransport). Measures the server's own
work on a request: the cache pass or the calls, the aggregation over the items, JSON in and out; as wall time
and as this process's CPU time (all threads: steadier than wall time on a shared machine).

  python benchmarks/serve_items.py --items 1000 --repeats 5

Scenarios: `cached` (every item's answer in the response cache: a warm request, all lookups) and `cold`
(every item new: a judge call each, answered at once). Prints one line per scenario."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from llmlabel.config import Config
from llmlabel.service.app import create_app

TOKEN = "bench-token-0123456789"
H = {"Authorization": f"Bearer {TOKEN}"}
LABELS = ["positive", "negative"]


def judge_reply(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    label = LABELS[len(body["messages"][-1]["content"]) % 2]
    payload = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": json.dumps({"label": label})},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
    }
    return httpx.Response(200, json=payload)


async def bench(n: int, repeats: int, cache_dir: Path) -> dict[str, list[tuple[float, float]]]:
    cfg = Config.model_validate(
        {
            "task": {"name": "sentiment", "instructions": "Sentiment?", "labels": LABELS},
            "judges": [
                {"name": n_, "model": f"fake-{n_}", "base_url": "http://judge.invalid/v1", "concurrency": 64}
                for n_ in ("a", "b")
            ],
            "cache_dir": str(cache_dir),
        }
    )
    app = create_app(
        cfg, token=TOKEN, state_dir=cache_dir / "state", max_items=n, transport=httpx.MockTransport(judge_reply)
    )
    out: dict[str, list[tuple[float, float]]] = {"cold": [], "cached": []}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000", timeout=600
        ) as c:
            for r in range(repeats):
                items = {"items": [{"text": f"review {r} number {i}: the product is fine"} for i in range(n)]}
                for scenario in ("cold", "cached"):  # the same items twice: new, then all from the cache
                    t0, c0 = time.perf_counter(), time.process_time()
                    resp = await c.post("/v1/label", json=items, headers=H)
                    out[scenario].append((time.perf_counter() - t0, time.process_time() - c0))
                    assert resp.status_code == 200 and len(resp.json()["items"]) == n, resp.text
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = asyncio.run(bench(a.items, a.repeats, Path(tmp)))
    for scenario, got in res.items():
        wall, cpu = [w for w, _ in got], [c for _, c in got]
        med, cmed = statistics.median(wall), statistics.median(cpu)
        print(
            f"{scenario}: {a.items} items x {len(got)} requests: median {med * 1000:.0f} ms wall a request "
            f"({a.items / med:,.0f} items/s; min {min(wall) * 1000:.0f}, max {max(wall) * 1000:.0f} ms), "
            f"median {cmed * 1000:.0f} ms CPU ({a.items / cmed:,.0f} items per CPU second)"
        )


if __name__ == "__main__":
    main()
