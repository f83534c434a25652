#!/usr/bin/env python3
"""The testbed's floor: a bare aiohttp + uvloop loop (no llmlabel: no prompts, cache, parsing or output) sending
chat-completions requests for the first ROWS texts of a CSV to a server at CONCURRENCY. It prints one JSON line:
rows, concurrency, seconds (first request to last response, start-up excluded), rows/s.

What it reaches is the most any single-process Python client can get from this server on this machine: the
throughput benchmark shows it next to llmlabel's figures.

    python benchmarks/bare_client.py BASE_URL CORPUS.csv ROWS CONCURRENCY
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time


async def run(base_url: str, corpus: str, n: int, c: int) -> dict:
    import aiohttp

    with open(corpus, newline="", encoding="utf-8") as fh:
        texts = [r["text"] for _, r in zip(range(n), csv.DictReader(fh))]
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]}},
        "required": ["label"],
        "additionalProperties": False,
    }
    system = "Classify the question by the kind of answer it asks for. Labels: ABBR, DESC, ENTY, HUM, LOC, NUM."
    sem = asyncio.Semaphore(c)
    url = base_url.rstrip("/") + "/chat/completions"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as s:

        async def one(text: str) -> str:
            body = json.dumps(
                {
                    "model": "judge-a",
                    "temperature": 0,
                    "max_tokens": 64,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": f"<text>\n{text}\n</text>"},
                    ],
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "labels", "schema": schema, "strict": True},
                    },
                }
            )
            async with sem:
                async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    return json.loads(await r.read())["choices"][0]["message"]["content"]

        t = time.perf_counter()
        await asyncio.gather(*(one(t_) for t_ in texts))
        dt = time.perf_counter() - t
    return {"rows": len(texts), "concurrency": c, "seconds": dt, "rps": len(texts) / dt}


def main() -> int:
    ap = argparse.ArgumentParser(description="a bare aiohttp client's rows/s against an OpenAI-compatible server")
    ap.add_argument("base_url")
    ap.add_argument("corpus", help="a CSV with a text column")
    ap.add_argument("rows", type=int)
    ap.add_argument("concurrency", type=int)
    a = ap.parse_args()
    base_url, corpus, n, c = a.base_url, a.corpus, a.rows, a.concurrency
    try:
        import uvloop

        res = uvloop.run(run(base_url, corpus, n, c))
    except ImportError:
        res = asyncio.run(run(base_url, corpus, n, c))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
