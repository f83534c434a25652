"""`llmlabel distill` and `llmlabel predict` end to end, from `llmlabel label` output."""

import json

import pytest
from conftest import one_line_error, read_jsonl, run_cli, run_main, write_config


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_distill_refuses_odd_labeled_rows_in_one_line(tmp_path, capsys):
    """A labeled file whose fields are not what `llmlabel label` writes: one line naming the row, never a
    traceback (a word as a confidence, candidates that are no list, a line that is not a JSON object)."""
    good = {"text": "a", "label": "pos", "candidates": ["pos"], "confidence": 0.9, "error": None}
    cases = {
        "conf.csv": 'text,label,candidates,confidence,error\na,pos,"[""pos""]",high,\n',
        "cands.csv": "text,label,candidates,confidence,error\na,pos,{oops,0.9,\n",
        "line.jsonl": json.dumps(good) + "\n[1, 2]\n",
    }
    for name, body in cases.items():
        (tmp_path / name).write_text(body)
        rc, _, err = run_main(capsys, "distill", str(tmp_path / name), "-o", str(tmp_path / "m.skops"))
        one_line_error(rc, err, name)
        assert not (tmp_path / "m.skops").exists()


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow
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


# -- hostile model archives: sizes and shapes are checked against the card before anything is read ---------
def _model(tmp_path):
    """A small real model file (and its card), from `llmlabel label`-like output."""
    from llmlabel.distill.training import save_model, train_from_labeled

    words = {"pos": "great lovely fine", "neg": "awful bad poor", "mid": "okay average plain"}
    rows = [
        {"id": f"{lab}{i}", "text": f"{words[lab].split()[i % 3]} thing {i}", "label": lab, "candidates": [lab]}
        for lab in words
        for i in range(40)
    ]
    (tmp_path / "lab.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, card = train_from_labeled(str(tmp_path / "lab.jsonl"), cv=False)
    save_model(model, card, str(tmp_path / "m.skops"))
    (tmp_path / "in.csv").write_text("id,text\n1,a lovely thing\n")
    return tmp_path / "m.skops", card, model.clf_.coef_.shape


def _member(path, attr):
    """The .npy member that holds the model attribute `attr` (e.g. coef_)."""
    import zipfile

    schema = json.loads(zipfile.ZipFile(path).read("schema.json"))
    found = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == attr and isinstance(v, dict) and v.get("__loader__") == "NdArrayNode":
                    found.append(v["file"])
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return found[0]


def _rewrite(path, member, data, compress=False):
    """The archive with one member's bytes replaced (deflated when `compress`)."""
    import zipfile

    src = zipfile.ZipFile(path)
    items = [(i.filename, src.read(i.filename)) for i in src.infolist()]
    src.close()
    with zipfile.ZipFile(path, "w") as out:
        for name, raw in items:
            if name == member:
                out.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
            else:
                out.writestr(name, raw)


def _npy(array):
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _predict(capsys, tmp_path, model):
    return run_main(capsys, "predict", str(model), str(tmp_path / "in.csv"), "-o", str(tmp_path / "p.jsonl"))


def test_predict_works_on_a_checked_model(tmp_path, capsys):
    model, card, (_, f) = _model(tmp_path)
    assert card["n_features"] == f
    rc, _, err = _predict(capsys, tmp_path, model)
    assert rc == 0 and (tmp_path / "p.jsonl").exists(), err


@pytest.mark.slow
def test_predict_refuses_an_array_that_decompresses_far_beyond_the_file(tmp_path, capsys, monkeypatch):
    import numpy as np

    from llmlabel.distill import training

    model, _, _ = _model(tmp_path)
    monkeypatch.setattr(
        training, "ARCHIVE_SLACK", 1 << 20, raising=False
    )  # (the same check as 3 GiB over 64 MiB, smaller)
    coef = _member(model, "coef_")
    _rewrite(model, coef, _npy(np.zeros((3, 4_000_000))), compress=True)  # 96 MB of zeros in ~100 kB
    assert model.stat().st_size < 500_000
    rc, _, err = _predict(capsys, tmp_path, model)
    line = one_line_error(rc, err, "not a model saved by", "96,", "decompressed")
    assert str(model) in line and not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize(
    "attr, shape, needle",
    [
        ("coef_", "wide", "do not fit the"),  # one feature too many: predict would fail on the first batch
        ("coef_", "rows", "do not fit the 3 labels of the model card"),
        ("intercept_", "rows", "intercepts of shape"),
        ("idf_", "wide", "do not match each other"),
        ("n_iter_", "huge", "larger than any part of this model"),
    ],
)
def test_predict_refuses_arrays_of_the_wrong_shape(tmp_path, capsys, attr, shape, needle):
    import numpy as np

    model, _, (k, f) = _model(tmp_path)
    array = {
        ("coef_", "wide"): np.zeros((k, f + 1)),
        ("coef_", "rows"): np.zeros((k + 2, f)),
        ("intercept_", "rows"): np.zeros(k + 1),
        ("idf_", "wide"): np.zeros(7, dtype=np.float32),
        ("n_iter_", "huge"): np.zeros(f + 5000, dtype=np.int32),
    }[(attr, shape)]
    _rewrite(model, _member(model, attr), _npy(array))
    rc, _, err = _predict(capsys, tmp_path, model)
    one_line_error(rc, err, "not a model saved by", needle)
    assert not (tmp_path / "p.jsonl").exists()


def test_predict_refuses_an_array_header_that_lies_about_its_size(tmp_path, capsys):
    import numpy as np

    model, _, (k, f) = _model(tmp_path)
    raw = _npy(np.zeros((k, f)))
    header = raw[: raw.index(b"\n") + 1]
    lying = header.replace(f"({k}, {f})".encode(), b"(3, 999999999)")
    lying = lying[:-1].ljust(len(header) - 1) + b"\n"  # (the header keeps its length)
    _rewrite(model, _member(model, "coef_"), lying + raw[len(header) :])
    rc, _, err = _predict(capsys, tmp_path, model)
    one_line_error(rc, err, "not a model saved by", "declares shape (3, 999999999)")
