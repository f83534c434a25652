"""`llmlabel distill` and `llmlabel predict` end to end, from `llmlabel label` output."""

import json

from conftest import read_jsonl, run_cli, run_main, write_config


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
    r = run_cli("distill", str(tmp_path / "lab.jsonl"), "-o", str(tmp_path / "m.skops"), "--no-cv")
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "m.skops.card.json").read_text())
    assert card["labels"] == ["negative", "positive"] and card["rows_used"] == 240 and card["mode"] == "candidates"
    (tmp_path / "new.csv").write_text("id,text\nn1,this was superb and lovely\nn2,it arrived broken and terrible\n")
    r = run_cli("predict", str(tmp_path / "m.skops"), str(tmp_path / "new.csv"), "-o", str(tmp_path / "p.jsonl"))
    assert r.returncode == 0, r.stderr
    pred = {p["id"]: p for p in read_jsonl(tmp_path / "p.jsonl")}
    assert pred["n1"]["label"] == "positive" and pred["n2"]["label"] == "negative"
    assert abs(sum(pred["n1"]["probs"].values()) - 1) < 1e-3


def test_distill_errors(tmp_path):
    r = run_cli("distill", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "m.skops"))
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.jsonl").write_text(
        json.dumps({"text": "x", "label": None, "candidates": [], "error": "boom"}) + "\n"
    )
    r = run_cli("distill", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "m.skops"))
    assert r.returncode == 2 and "no usable rows" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "m.skops").write_text("not a model")
    (tmp_path / "in.csv").write_text("id,text\n1,a\n")
    r = run_cli("predict", str(tmp_path / "m.skops"), str(tmp_path / "in.csv"), "-o", str(tmp_path / "p.jsonl"))
    assert r.returncode == 2 and "not a model saved by" in r.stderr and not (tmp_path / "p.jsonl").exists()


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_predict_never_unpickles_a_foreign_file(tmp_path, capsys):
    import pickle

    import joblib

    marker = tmp_path / "pwned"
    (tmp_path / "in.csv").write_text("id,text\n1,a\n")
    for name, dump in (("evil.pkl", pickle.dump), ("evil.joblib", joblib.dump)):
        with open(tmp_path / name, "wb") as fh:
            dump({"model": _Payload(str(marker))}, fh)
        rc, _, err = run_main(
            capsys, "predict", str(tmp_path / name), str(tmp_path / "in.csv"), "-o", str(tmp_path / "p.jsonl")
        )
        assert rc == 2 and "not a model saved by" in err and "Traceback" not in err, err
        assert not marker.exists() and not (tmp_path / "p.jsonl").exists()


def test_predict_refuses_an_archive_with_foreign_types(tmp_path, capsys):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    # A skops archive is safe to inspect, but only llmlabel's own types may be built from it.
    sio.dump({"format": 2, "model": FunctionTransformer(print)}, str(tmp_path / "m.skops"))
    (tmp_path / "in.csv").write_text("id,text\n1,a\n")
    rc, _, err = run_main(
        capsys, "predict", str(tmp_path / "m.skops"), str(tmp_path / "in.csv"), "-o", str(tmp_path / "p.jsonl")
    )
    assert rc == 2 and "not a model saved by" in err and "does not write" in err, err
