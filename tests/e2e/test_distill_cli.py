"""`llmlabel distill` and `llmlabel predict` end to end, from `llmlabel label` output."""

import json

from conftest import read_jsonl, run_cli, write_config


def test_label_distill_predict(tmp_path, fake):
    words = {
        "positive": ["great", "lovely", "superb", "excellent"],
        "negative": ["awful", "broken", "poor", "terrible"],
    }
    rows, answers = [], {}
    for i in range(240):
        lab = "positive" if i % 2 else "negative"
        text = f"item {i} was {words[lab][i % 4]} and {words[lab][(i // 4) % 4]}"
        rows.append({"id": f"t{i}", "text": text})
        answers[text] = lab
    fake.answers = answers
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_config(tmp_path / "c.yaml", fake.base_url, mode="candidates")
    assert (
        run_cli("label", str(tmp_path / "in.jsonl"), "-c", str(cfg), "-o", str(tmp_path / "lab.jsonl")).returncode == 0
    )
    r = run_cli("distill", str(tmp_path / "lab.jsonl"), "-o", str(tmp_path / "m.joblib"), "--no-cv")
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "m.joblib.card.json").read_text())
    assert card["labels"] == ["negative", "positive"] and card["rows_used"] == 240 and card["mode"] == "candidates"
    (tmp_path / "new.csv").write_text("id,text\nn1,this was superb and lovely\nn2,it arrived broken and terrible\n")
    r = run_cli("predict", str(tmp_path / "m.joblib"), str(tmp_path / "new.csv"), "-o", str(tmp_path / "p.jsonl"))
    assert r.returncode == 0, r.stderr
    pred = {p["id"]: p for p in read_jsonl(tmp_path / "p.jsonl")}
    assert pred["n1"]["label"] == "positive" and pred["n2"]["label"] == "negative"
    assert abs(sum(pred["n1"]["probs"].values()) - 1) < 1e-3


def test_distill_errors(tmp_path):
    r = run_cli("distill", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "m.joblib"))
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.jsonl").write_text(
        json.dumps({"text": "x", "label": None, "candidates": [], "error": "boom"}) + "\n"
    )
    r = run_cli("distill", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "m.joblib"))
    assert r.returncode == 2 and "no usable rows" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "m.joblib").write_text("not a model")
    (tmp_path / "in.csv").write_text("id,text\n1,a\n")
    r = run_cli("predict", str(tmp_path / "m.joblib"), str(tmp_path / "in.csv"), "-o", str(tmp_path / "p.jsonl"))
    assert r.returncode == 2 and "not a model saved by" in r.stderr and not (tmp_path / "p.jsonl").exists()
