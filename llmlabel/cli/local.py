"""`llmlabel local start|stop|status`: the embedded llama.cpp servers, run standalone so jobs can share them."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_local(a: argparse.Namespace) -> int:
    from llmlabel.local import servers as local

    if a.action == "start":
        st = local.start_servers(a.state_dir, port=a.port)
        for s in st.servers:
            print(f"serving {', '.join(s.models)} at {s.base_url} (pid {s.pid})")
        print(
            "jobs whose config names no judges now use these servers; stop them with `llmlabel local stop`",
            file=sys.stderr,
        )
        return 0
    if a.action == "stop":
        pids = local.stop_servers(a.state_dir)
        print(f"stopped {len(pids)} server(s)" if pids else "no local server was running")
        return 0
    info = local.status(a.state_dir)
    if a.json:
        print(json.dumps(info, indent=2))
    elif not info["servers"]:
        print("no local server is running (start them with `llmlabel local start`)")
    else:
        for s in info["servers"]:
            state = "healthy" if s["healthy"] else ("running, not answering" if s["alive"] else "dead")
            print(f"{', '.join(s['models'])}: {s['base_url']} pid {s['pid']} {state}; log {s['log']}")
    return 0 if info["running"] or not info["servers"] else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("local", help="start, stop or show the embedded local model servers (llama.cpp)")
    s.add_argument("action", choices=["start", "stop", "status"])
    s.add_argument("--port", type=int, help="first port to use (default: free ports)")
    s.add_argument(
        "--state-dir", help="where pids and logs live (default: $LLMLABEL_STATE_DIR or ~/.cache/llmlabel/local)"
    )
    s.add_argument("--json", action="store_true", help="status as JSON")
    s.set_defaults(func=cmd_local)
