"""Which local layout is faster when requests alternate between the two bundled models?

ONE llama-cpp-python server holding both models ("shared") reloads a model on every switch;
ONE SERVER PER MODEL ("per-model") keeps both loaded. Same N short JSON-schema constrained
labeling requests, alternating models, against each layout.

    python benchmarks/local_switch.py [--n 20] [--out benchmarks/results/local_switch.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmlabel.local import servers as local  # noqa: E402

TEXTS = [
    "I loved this film, it was wonderful.",
    "Terrible service, never again.",
    "The battery died after two days.",
    "Great value and fast shipping!",
    "Boring plot and wooden acting.",
    "Best coffee in town.",
    "The app crashes every time I open it.",
    "A delightful, heartfelt story.",
    "It broke on the first use.",
    "Friendly staff and a lovely room.",
]
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["negative", "positive"]}},
    "required": ["label"],
    "additionalProperties": False,
}


def ask(judge: dict, text: str, max_tokens: int) -> tuple[float, str]:
    client = OpenAI(base_url=judge["base_url"], api_key=judge["api_key"], timeout=300, max_retries=0)
    t = time.perf_counter()
    r = client.chat.completions.create(
        model=judge["model"],
        temperature=0,
        max_tokens=max_tokens,
        messages=[
            {
                "role": "system",
                "content": "Classify the sentiment of the text as negative or positive. Answer in JSON.",
            },
            {"role": "user", "content": text},
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "label", "schema": SCHEMA, "strict": True}},
    )
    dt_s = time.perf_counter() - t
    label = json.loads(r.choices[0].message.content or "{}").get("label", "?")
    return dt_s, label


def run_layout(layout: local.Layout, n: int, max_tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        ens = local.LocalEnsemble(d, layout=layout, timeout=300)
        # A private state dir: never reuse standalone servers for a benchmark.
        judges = ens.start()
        startup = time.perf_counter() - t0
        try:
            by_model = {j["model"]: j for j in judges}
            order = [judges[i % 2]["model"] for i in range(n)]
            # Warm-up: one request per model, in the same alternation, not counted.
            for m in order[:2]:
                ask(by_model[m], TEXTS[0], max_tokens)
            times: dict[str, list[float]] = {m: [] for m in by_model}
            for i, m in enumerate(order):
                s, label = ask(by_model[m], TEXTS[i % len(TEXTS)], max_tokens)
                times[m].append(s)
                print(f"  {layout:9} {i:2d} {m:13} {s:6.2f}s {label}", flush=True)
        finally:
            ens.stop()
    all_t = [x for v in times.values() for x in v]
    return {
        "layout": layout,
        "startup_s": startup,
        "mean_s": statistics.mean(all_t),
        "stdev_s": statistics.stdev(all_t),
        "per_model": {m: statistics.mean(v) for m, v in times.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="measured requests per layout (alternating models)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--layouts", default="per-model,shared")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "local_switch.md")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    results = [run_layout(lay, a.n, a.max_tokens) for lay in a.layouts.split(",")]  # type: ignore[arg-type]
    fastest = min(results, key=lambda r: r["mean_s"])
    lines = [
        "# Local layout: alternating requests between two models",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs (n_threads = CPUs), CPU only",
        f"- python {platform.python_version()}, llama-cpp-python {version('llama-cpp-python')}",
        f"- command: `python benchmarks/local_switch.py {' '.join(sys.argv[1:])}`",
        f"- workload: {a.n} short sentiment requests alternating smollm2-135m / gemma3-270m, "
        f"JSON-schema constrained (enum negative/positive), temperature 0, max_tokens {a.max_tokens}, "
        "sequential, after one uncounted warm-up request per model",
        "",
        f"- load average before: {load:.1f} (other work on the machine makes these numbers noisy)",
        "",
        "| layout | mean s/request | stdev s | " + " | ".join(f"{m} s/req" for m in local.MODELS) + " | startup s |",
        "|---|---|---|" + "---|" * len(local.MODELS) + "---|",
    ]
    for r in results:
        lines.append(
            f"| {r['layout']} | {r['mean_s']:.3f} | {r['stdev_s']:.2f} | "
            + " | ".join(f"{r['per_model'][m]:.3f}" for m in local.MODELS)
            + f" | {r['startup_s']:.1f} |"
        )
    lines += ["", f"Faster: **{fastest['layout']}** (default in `llmlabel/local.py`: `{local.DEFAULT_LAYOUT}`)."]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
