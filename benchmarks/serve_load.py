"""Load benchmark for `llmlabel serve`: N concurrent clients posting /v1/label (one TREC question each) for a
fixed time, against simulated judges (../shared/tools/fakellm.py). Reports errors, latency and throughput and
writes benchmarks/results/serve.md.

  python benchmarks/serve_load.py                      # 200 clients, 60 s per scenario
  python benchmarks/serve_load.py --duration 10 --clients 50 --scenario unique

Scenarios: `repeat` cycles through the 500 TREC test questions (after the first pass every answer comes from
the shared response cache, as for a service asked the same things again); `unique` makes every text new
(a suffix per request), so every item costs a real judge call: the server's worst case."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TOKEN = "bench-token-" + os.urandom(8).hex()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> re.Match[str]:
    deadline = time.time() + timeout
    assert proc.stderr is not None or proc.stdout is not None
    stream = proc.stderr if proc.stderr is not None else proc.stdout
    assert stream is not None
    seen = []
    while time.time() < deadline:
        line = stream.readline()
        if not line:
            if proc.poll() is not None:
                raise SystemExit(f"process exited: {''.join(seen)[-2000:]}")
            continue
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise SystemExit(f"timed out waiting for {pattern!r}: {''.join(seen)[-2000:]}")


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def load(
    url: str, texts: list[str], labels: set[str], clients: int, duration: float, unique: bool
) -> dict[str, Any]:
    import aiohttp

    lat: list[float] = []
    errors: dict[str, int] = {}
    counter = [0]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.perf_counter() + duration

    async def client(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            k = counter[0]
            counter[0] += 1
            text = texts[k % len(texts)] + (f" (variant {k})" if unique else "")
            t0 = time.perf_counter()
            try:
                async with session.post(
                    f"{url}/v1/label", json={"items": [{"id": k, "text": text}]}, headers=headers
                ) as r:
                    body = await r.read()
                    ok = r.status == 200
                    if ok:
                        item = json.loads(body)["items"][0]
                        ok = item["label"] in labels and item["error"] is None
                    why = "ok" if ok else f"status {r.status}" if r.status != 200 else "invalid label"
            except Exception as e:  # a benchmark counts failures, it does not stop on them
                why = type(e).__name__
            if why == "ok":
                lat.append(time.perf_counter() - t0)
            else:
                errors[why] = errors.get(why, 0) + 1

    t0 = time.perf_counter()
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {
        "requests": len(lat) + sum(errors.values()),
        "ok": len(lat),
        "errors": errors,
        "wall": wall,
        "rps": len(lat) / wall,
        "p50": percentile(lat, 0.5),
        "p90": percentile(lat, 0.9),
        "p99": percentile(lat, 0.99),
        "max": max(lat, default=float("nan")),
        "mean": statistics.fmean(lat) if lat else float("nan"),
    }


def metric_sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.M))


def run_scenario(
    a: argparse.Namespace, scenario: str, texts: list[str], labels: list[str], work: Path
) -> dict[str, Any]:
    import httpx

    fport = free_port()
    fake_cmd = [
        sys.executable,
        str(SHARED / "tools" / "fakellm.py"),
        "--data",
        str(a.data),
        "--port",
        str(fport),
        "--latency",
        str(a.latency),
        "--accuracy",
        "default=0.85",
    ]
    fake = subprocess.Popen(fake_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = None
    try:
        wait_line(fake, r"listening")
        cfg = work / f"{scenario}.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "task": {
                        "name": "trec",
                        "instructions": "What kind of answer does the question ask for?",
                        "labels": labels,
                    },
                    "judges": [
                        {
                            "name": f"sim-{n}",
                            "model": f"sim-{n}",
                            "base_url": f"http://127.0.0.1:{fport}/v1",
                            "concurrency": a.judge_concurrency,
                            "timeout": 30,
                        }
                        for n in ("a", "b")[: a.judges]
                    ],
                    "cache_dir": str(work / f"cache-{scenario}"),
                }
            )
        )
        env = {**os.environ, "LLMLABEL_SERVE_TOKEN": TOKEN}
        serve_cmd = [
            sys.executable,
            "-m",
            "llmlabel",
            "serve",
            "-c",
            str(cfg),
            "--port",
            "0",
            "--state-dir",
            str(work / f"state-{scenario}"),
            "--log-level",
            "warning",
        ]
        server = subprocess.Popen(
            serve_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=work
        )
        url = wait_line(server, r"serving on (http://\S+)").group(1)
        with httpx.Client(timeout=10) as h:
            while h.get(f"{url}/livez").status_code != 200:
                time.sleep(0.1)
        print(f"[{scenario}] {a.clients} clients for {a.duration:g}s against {url} ...", file=sys.stderr, flush=True)
        res = asyncio.run(load(url, texts, set(labels), a.clients, a.duration, scenario == "unique"))
        with httpx.Client(timeout=10) as h:
            m = h.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
            res["judge_requests"] = metric_sum(m, "llmlabel_judge_requests_total")
            res["cache_hits"] = metric_sum(m, "llmlabel_judge_cache_hits_total")
            res["fake_stats"] = h.get(f"http://127.0.0.1:{fport}/stats").json()
        res["scenario"] = scenario
        return res
    finally:
        for p in (server, fake):
            if p is not None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()


def report(a: argparse.Namespace, results: list[dict[str, Any]], argv: list[str]) -> str:
    cpu = (
        next(
            (
                l.split(":", 1)[1].strip()
                for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    load_avg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# `llmlabel serve` load benchmark",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu}; Python {platform.python_version()}; "
        f"load average before the run: {load_avg} (the machine is shared: other work ran at the same time)",
        f"- command: `{' '.join(shlex.quote(x) for x in ['python', 'benchmarks/serve_load.py', *argv])}`",
        f"- setup: `llmlabel serve` (one uvicorn process) with {a.judges} simulated judge(s) "
        f"(`../shared/tools/fakellm.py --latency {a.latency}`, judge concurrency {a.judge_concurrency}); "
        f"{a.clients} concurrent clients, each posting `/v1/label` with one TREC test question, for {a.duration:g} s "
        "per scenario; the load generator (aiohttp), the server and the fake LLM share the machine.",
        "- scenarios: `repeat` cycles through the 500 questions (answers come from the response cache after the "
        "first pass); `unique` adds a suffix per request, so every item is a real judge call.",
        "",
        "| scenario | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms | judge requests | cache hits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        errs = sum(r["errors"].values())
        lines.append(
            f"| {r['scenario']} | {r['requests']} | {errs} | {r['rps']:.0f} | {r['p50'] * 1000:.0f} | "
            f"{r['p90'] * 1000:.0f} | {r['p99'] * 1000:.0f} | {r['max'] * 1000:.0f} | "
            f"{r['judge_requests']:.0f} | {r['cache_hits']:.0f} |"
        )
    for r in results:
        if r["errors"]:
            lines.append(f"\nerrors in {r['scenario']}: {r['errors']}")
    lines += ["", "Errors count any non-200 answer, a transport failure, or an item without a valid TREC label."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60, help="seconds of load per scenario (default: 60)")
    p.add_argument("--clients", type=int, default=200, help="concurrent clients (default: 200)")
    p.add_argument("--latency", type=float, default=0.05, help="simulated judge latency, seconds (default: 0.05)")
    p.add_argument("--judges", type=int, default=2, choices=[1, 2], help="simulated judges (default: 2)")
    p.add_argument("--judge-concurrency", type=int, default=128, help="requests in flight per judge (default: 128)")
    p.add_argument("--scenario", choices=["repeat", "unique", "both"], default="both")
    p.add_argument("--data", type=Path, default=SHARED / "data" / "trec_test.csv")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.md")
    a = p.parse_args(argv)
    with open(a.data, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    texts = [r["text"] for r in rows]
    labels = sorted({r["label"] for r in rows})
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as d:
        for scenario in ["repeat", "unique"] if a.scenario == "both" else [a.scenario]:
            results.append(run_scenario(a, scenario, texts, labels, Path(d)))
    md = report(a, results, argv)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(md)
    print(md)
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
