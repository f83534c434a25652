"""The embedded default: a real llama.cpp server with the real Qwen2.5-Coder-1.5B model, started by llmlabel itself."""

import json
import os
from pathlib import Path

import pytest
from conftest import read_jsonl, run_cli

ROOT = Path(__file__).resolve().parents[2]


def _local_ready() -> str | None:
    from llmlabel.local import servers as local

    try:
        local.model_paths()
    except local.LocalError as e:
        return str(e)
    return None


missing = _local_ready()
if missing and os.environ.get("LLMLABEL_REQUIRE_LOCAL"):
    raise RuntimeError(f"LLMLABEL_REQUIRE_LOCAL is set but the local models cannot run: {missing}")
pytestmark = [pytest.mark.llama, pytest.mark.skipif(missing is not None, reason=f"extra `local` missing: {missing}")]


def _rows_report(out: Path, stderr: str) -> str:
    """What a failed run left: each row's label, error and judges' answers, the ledger's counts, stderr's tail."""
    lines = (
        [
            f"{r.get('id')}: label {r.get('label')!r}, error {r.get('error')!r}, judges {r.get('judges')}"
            for r in read_jsonl(out)
        ]
        if out.exists()
        else ["no output"]
    )
    ledger = Path(f"{out}.ledger.json")
    if ledger.exists():
        run = json.loads(ledger.read_text())["runs"][-1]
        lines.append(f"ledger: {run.get('requests')} requests, judges {run.get('judges')}")
    return "\n".join([*lines, stderr[-2000:]])


# On a loaded machine (2 cores at load ~15) one answer of the CPU model took over a judge's default 60 s and
# rows came back unlabeled: the embedded judges now wait 5 minutes an answer (servers.LOCAL_TIMEOUT), and a
# failure prints every row's error.
@pytest.mark.timeout(3000)
def test_label_with_no_key_uses_the_embedded_qwen_model_and_caches(tmp_path):
    # A config with only a `task:` section, no key in the environment (run_cli drops OPENAI_*).
    state = {"LLMLABEL_STATE_DIR": str(tmp_path / "state")}
    args = [
        "label",
        str(ROOT / "examples" / "reviews.csv"),
        "-c",
        str(ROOT / "examples" / "reviews.yaml"),
        "-o",
        str(tmp_path / "out.jsonl"),
        "--limit",
        "4",
        "-q",
    ]
    r = run_cli(*args, env=state, cwd=tmp_path, timeout=1500)
    report = _rows_report(tmp_path / "out.jsonl", r.stderr)
    assert r.returncode == 0, report
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == 4, report
    # The first four example reviews: positive, negative, positive, negative; the embedded judge gets them right.
    assert [row["label"] for row in rows] == ["positive", "negative", "positive", "negative"], report
    for row in rows:
        assert row["error"] is None, report
        assert set(row["judges"]) == {"qwen1.5b"}
        for ans in row["judges"].values():
            assert ans["label"] in ("positive", "negative")  # schema-constrained: always a valid label
        assert row["label"] in ("positive", "negative")
    ledger = json.loads((tmp_path / "out.jsonl.ledger.json").read_text())["runs"][-1]
    assert {j["model"] for j in ledger["judges"].values()} == {"qwen2.5-coder-1.5b"}
    # 4 rows, plus 3 content-free calibration prompts (the judge's logprobs are calibrated on them).
    assert ledger["requests"] == 7
    assert all(
        set(ans.get("probs") or {}) <= {"positive", "negative"} for row in rows for ans in row["judges"].values()
    )
    # An identical rerun is answered from the cache: no request at all.
    r = run_cli(*args, env=state, cwd=tmp_path, timeout=1500)
    assert r.returncode == 0, _rows_report(tmp_path / "out.jsonl", r.stderr)
    again = json.loads((tmp_path / "out.jsonl.ledger.json").read_text())["runs"][-1]
    assert again["requests"] == 0 and sum(j["cache_hits"] for j in again["judges"].values()) == 7
    assert read_jsonl(tmp_path / "out.jsonl") == rows
    # The servers llmlabel started for the job are gone.
    from llmlabel.local import servers as local

    assert not local.status(tmp_path / "state")["servers"]


def test_local_start_status_stop(tmp_path):
    env = {"LLMLABEL_STATE_DIR": str(tmp_path / "state")}
    r = run_cli("local", "start", env=env, timeout=300)
    try:
        assert r.returncode == 0, r.stderr
        assert "serving" in r.stdout
        r = run_cli("local", "status", "--json", env=env)
        info = json.loads(r.stdout)
        assert info["running"] and [m for s in info["servers"] for m in s["models"]] == ["qwen2.5-coder-1.5b"]
    finally:
        r = run_cli("local", "stop", env=env)
    assert r.returncode == 0 and "stopped" in r.stdout
    assert "no local server" in run_cli("local", "status", env=env).stdout


def test_distill_on_the_embedded_models_reading(tmp_path):
    # `--features local-llm`: the student's features are the embedded Qwen's mean-pooled states. Trained on
    # animals vs vehicles, it labels kinds it never saw (no shared words, so n-gram features have nothing).
    train = {
        "animal": [
            "a dog barked",
            "the cat slept",
            "a horse ran",
            "the cow ate grass",
            "a lion roared",
            "the owl hooted",
        ],
        "vehicle": [
            "a car drove",
            "the bus stopped",
            "a truck honked",
            "the train left",
            "a plane landed",
            "the van parked",
        ],
    }
    rows = [
        {"id": f"{lab}{i}", "text": t, "label": lab, "candidates": [lab], "confidence": 1.0, "error": None}
        for lab, texts in train.items()
        for i, t in enumerate(texts)
    ]
    (tmp_path / "lab.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = tmp_path / "m.skops"
    r = run_cli(
        "distill", str(tmp_path / "lab.jsonl"), "-o", str(model), "--features", "local-llm", "--no-cv", timeout=600
    )
    assert r.returncode == 0, r.stderr
    assert model.stat().st_size < 200_000  # the GGUF is not in the archive: it is loaded again on first use
    (tmp_path / "new.csv").write_text("id,text\n1,a giraffe\n2,a motorcycle\n3,the zebra\n4,a bicycle\n")
    r = run_cli("predict", str(model), str(tmp_path / "new.csv"), "-o", str(tmp_path / "p.jsonl"), timeout=600)
    assert r.returncode == 0, r.stderr
    assert [p["label"] for p in read_jsonl(tmp_path / "p.jsonl")] == ["animal", "vehicle", "animal", "vehicle"]
