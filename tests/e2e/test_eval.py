from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import label_main, read_jsonl, run_cli, write_config, write_corpus
from fakeserver import FakeLLM, pick

from llmlabel.cli.main import main

LABELS = ["positive", "negative"]


def _rec(rid: str, label: str | None, conf: float | None, cands: list[str], judges: dict) -> dict:
    probs = (
        None
        if label is None
        else {
            "positive": conf if label == "positive" else 1 - conf,
            "negative": conf if label == "negative" else 1 - conf,
        }
    )
    return {
        "id": rid,
        "text": f"t{rid}",
        "label": label,
        "confidence": conf,
        "probs": probs,
        "candidates": cands,
        "judges": judges,
        "error": None if label else "no judge answered",
    }


@pytest.fixture
def handmade(tmp_path: Path) -> tuple[Path, Path]:
    """Five output rows (one not in gold) and four gold rows (one not in the output)."""
    P, N = "positive", "negative"
    out = [
        _rec("1", P, 0.9, [P], {"a": {"label": P}, "b": {"label": P}}),
        _rec("2", N, 0.6, [N, P], {"a": {"label": N}, "b": {"label": P}}),
        _rec("3", P, 0.8, [P, N], {"a": {"label": P}, "b": {"label": N}}),
        _rec("4", N, 1.0, [N], {"a": {"label": N}, "b": {"label": N}}),
        _rec("5", P, 0.5, [P], {"a": {"label": P}}),
    ]
    o = tmp_path / "out.jsonl"
    o.write_text("".join(json.dumps(r) + "\n" for r in out))
    (tmp_path / "out.jsonl.ledger.json").write_text(
        json.dumps(
            {
                "runs": [{"cost": 0.3, "requests": 9, "judges": {"a": {"calls_saved": 0}, "b": {"calls_saved": 1}}}],
                "total": {"cost": 0.3, "requests": 9},
            }
        )
    )
    g = tmp_path / "gold.csv"
    with open(g, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "gold"])
        w.writerows([["1", P], ["2", P], ["3", P], ["4", N], ["9", N]])
    return o, g


def test_eval_known_numbers(handmade, capsys):
    o, g = handmade
    assert main(["eval", str(o), "--gold", str(g), "--label-column", "gold", "--id-column", "key"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy   0.7500" in printed and "Fleiss' kappa" in printed
    rep = json.loads((o.parent / "out.jsonl.eval.json").read_text())
    # Rows 1-4 join; predictions P N P N vs gold P P P N: 3 correct.
    assert rep["rows_evaluated"] == 4 and rep["rows_output"] == 5 and rep["correct"] == 3
    assert rep["accuracy"] == 0.75
    # F1(positive) = 2*1*(2/3)/(1+2/3) = 0.8; F1(negative) = 2*0.5*1/1.5 = 2/3.
    assert rep["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2, abs=1e-6)
    assert rep["judges"]["a"] == {"answered": 4, "accuracy": 0.75}
    assert rep["judges"]["b"] == {"answered": 4, "accuracy": 0.75}
    # Votes (a, b): PP, NP, PN, NN. Fleiss: P_bar = 0.5, p = (.5, .5), P_e = 0.5 -> kappa 0.
    assert rep["agreement"]["fleiss_kappa"] == pytest.approx(0.0, abs=1e-9)
    # Krippendorff: o_PN = o_NP = 2, n_P = n_N = 4, n = 8 -> 1 - 7 * 4 / (64 - 32) = 0.125.
    assert rep["agreement"]["krippendorff_alpha"] == pytest.approx(0.125, abs=1e-6)
    # Sets [P] [N,P] [P,N] [N] vs gold P P P N: all covered, sizes 1 2 2 1, F1 = (1 + 2/3 + 2/3 + 1)/4.
    c = rep["candidates"]
    assert c["coverage"] == 1.0 and c["mean_set_size"] == 1.5 and c["beta"] == 0.5
    assert c["candidate_f1"] == pytest.approx((2 + 4 / 3) / 4, abs=1e-6)
    # ECE, 15 bins: 0.9 (right), 0.6 (wrong), 0.8 (right), 1.0 (right) each alone in a bin:
    # (0.1 + 0.6 + 0.2 + 0.0) / 4 = 0.225.
    assert rep["calibration"]["ece"] == pytest.approx(0.225, abs=1e-6)
    # Risk-coverage: confidence >= 0.8 keeps 1.0, 0.9, 0.8 (all right): 75% of rows at accuracy 1.
    assert rep["calibration"]["selective"][1] == {"target": 0.9, "threshold": 0.8, "coverage": 0.75, "accuracy": 1.0}
    # Cost $0.3 over 5 output rows; 4 evaluated -> $0.24 for 3 correct labels.
    assert rep["cost"]["total"] == 0.3 and rep["cost"]["per_correct"] == pytest.approx(0.08, abs=1e-6)
    assert rep["cost"]["calls_saved_last_run"] == {"b": 1}


def test_eval_report_path_csv_output_and_unlabeled_rows(tmp_path):
    # A CSV output stores candidates/judges as JSON strings; a row without a label counts as wrong.
    o = tmp_path / "out.csv"
    with open(o, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "label", "confidence", "candidates", "judges"])
        w.writeheader()
        w.writerow(
            {"id": "a", "label": "x", "confidence": "0.9", "candidates": '["x"]', "judges": '{"j": {"label": "x"}}'}
        )
        w.writerow({"id": "b", "label": "", "confidence": "", "candidates": "[]", "judges": '{"j": {"error": "boom"}}'})
    g = tmp_path / "g.jsonl"
    g.write_text('{"id": "a", "label": "x"}\n{"id": "b", "label": "y"}\n')
    rep_path = tmp_path / "r.json"
    assert main(["eval", str(o), "--gold", str(g), "-o", str(rep_path)]) == 0
    rep = json.loads(rep_path.read_text())
    assert rep["accuracy"] == 0.5 and rep["rows_unlabeled"] == 1 and rep["accuracy_labeled"] == 1.0
    assert rep["judges"]["j"] == {"answered": 1, "accuracy": 1.0}
    assert rep["agreement"]["fleiss_kappa"] is None  # one judge: no agreement to measure
    assert rep["calibration"]["rows"] == 1
    # one judge in label mode: its output `candidates` are no set it chose, so no candidate metrics (issue 29)
    assert "candidates" not in rep
    assert "cost" not in rep  # no ledger beside the output


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_output", "output file"),
        ("no_gold", "gold file"),
        ("no_label_column", "no column 'label'"),
        ("no_overlap", "no ids in common"),
        ("not_an_output", "has no 'label' column"),
    ],
)
def test_eval_errors(tmp_path, capsys, case, message):
    o = tmp_path / "out.jsonl"
    o.write_text(json.dumps({"id": "1", "label": "positive"}) + "\n")
    g = tmp_path / "gold.csv"
    g.write_text("id,label\n1,positive\n")
    if case == "no_output":
        o = tmp_path / "missing.jsonl"
    elif case == "no_gold":
        g = tmp_path / "missing.csv"
    elif case == "no_label_column":
        g.write_text("id,truth\n1,positive\n")
    elif case == "no_overlap":
        g.write_text("id,label\n7,positive\n")
    else:
        o.write_text(json.dumps({"id": "1", "prediction": "positive"}) + "\n")
    assert main(["eval", str(o), "--gold", str(g)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmlabel: error:") and message in err and "\n" not in err and "Traceback" not in err


@pytest.mark.slow
def test_a_cascade_stops_trusting_stuck_judges_after_its_probe(tmp_path, capsys):
    """Two cheap judges that say "positive" to everything agree on every row, so a plain cascade would end
    every row on them and never ask the good judge. Its first rows (the probe) ask every judge; after them
    the stuck ones no longer end a row, and the labels are the good judge's."""
    n = 60
    rows = write_corpus(tmp_path / "in.csv", n)
    stuck = FakeLLM(answers={r["text"]: "positive" for r in rows}).start()
    good = FakeLLM().start()

    def judge(name: str, server: FakeLLM) -> dict[str, object]:
        return {"name": name, "model": f"m-{name}", "base_url": server.base_url, "concurrency": 2, "timeout": 5}

    cfg = write_config(
        tmp_path / "c.yaml",
        None,
        judges=[judge("stuck1", stuck), judge("stuck2", stuck), judge("good", good)],
        cascade={"enabled": True, "threshold": 0.8, "probe_rows": 20},
    )
    out = tmp_path / "o.jsonl"
    rc, err = label_main(capsys, str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out))
    assert rc == 0, err
    assert "answered only by judges left out" not in err
    got = read_jsonl(out)
    labels = ["positive", "negative"]
    assert [g["label"] for g in got] == [pick(r["text"], labels) for r in rows]
    assert {g["label"] for g in got} == set(labels)  # (the test means something: the good judge says both)
    assert good.requests == n and stuck.requests == 2 * n
    stuck.stop()
    good.stop()


@pytest.mark.slow
def test_candidates_and_cascade_end_to_end(tmp_path, fake):
    """Candidate mode with a three-judge cascade through the CLI, then eval of the result."""
    n = 12
    rows = write_corpus(tmp_path / "in.csv", n)
    judges = [
        {
            "name": n_,
            "model": f"m-{n_}",
            "base_url": fake.base_url,
            "concurrency": 4,
            "timeout": 5,
            "price_per_million": {"input": 1.0, "output": 2.0},
        }
        for n_ in ("cheap", "mid", "dear")
    ]
    cfg = write_config(
        tmp_path / "c.yaml",
        fake.base_url,
        judges=judges,
        mode="candidates",
        aggregate="dawid_skene",
        # A set of two labels gives its pick 2/3 (not certainty): two agreeing judges reach 0.6. No probe:
        # its first rows would ask every judge (see the test above).
        cascade={"enabled": True, "threshold": 0.6, "probe_rows": 0},
    )
    out = tmp_path / "o.jsonl"
    r = run_cli("label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    got = read_jsonl(out)
    assert [g["id"] for g in got] == [x["id"] for x in rows]
    for g in got:
        assert g["error"] is None and g["label"] in LABELS
        assert isinstance(g["candidates"], list) and g["candidates"] and set(g["candidates"]) <= set(LABELS)
        assert g["label"] in g["candidates"]
        # Every judge asked keeps its own candidate set; the fake server's judges agree, so the
        # cascade stops after two of them and the third is never asked.
        assert set(g["judges"]) == {"cheap", "mid"}
        for ans in g["judges"].values():
            assert ans["candidates"] and set(ans["candidates"]) <= set(LABELS)
    ledger = json.loads(out.with_name("o.jsonl.ledger.json").read_text())
    js = ledger["runs"][-1]["judges"]
    assert js["dear"]["calls_saved"] == n and js["dear"]["requests"] == 0
    assert js["cheap"]["requests"] == n and js["mid"]["requests"] == n
    assert fake.requests == 2 * n

    gold = tmp_path / "gold.csv"
    gold.write_text("id,label\n" + "".join(f"{g['id']},{g['label']}\n" for g in got))
    r = run_cli("eval", str(out), "--gold", str(gold))
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.with_name("o.jsonl.eval.json").read_text())
    assert rep["accuracy"] == 1.0 and rep["candidates"]["coverage"] == 1.0
    # A rerun killed after paying (only its ledger log says so): eval counts what it spent, and still reads
    # the figures of the run that wrote the output (issue 25, item 4).
    price = {"model": "m-cheap", "price_input": 1.0, "price_output": 2.0}
    killed = [
        {"run": "k", "start": {"judges": {"cheap": price}}},
        {"run": "k", "c": {"cheap": {"requests": 5, "input_tokens": 10**6}}},
    ]
    out.with_name("o.jsonl.ledger.jsonl").write_text("".join(json.dumps(x) + "\n" for x in killed))
    r = run_cli("eval", str(out), "--gold", str(gold))
    assert r.returncode == 0, r.stderr
    again = json.loads(out.with_name("o.jsonl.eval.json").read_text())
    assert again["cost"]["requests"] == 2 * n + 5 and again["cost"]["total"] == pytest.approx(
        rep["cost"]["total"] + 1.0
    )
    assert again["cost"]["calls_saved_last_run"] == {"dear": n} == rep["cost"]["calls_saved_last_run"]
    assert set(rep["judges"]) == {"cheap", "mid"} and rep["judges"]["cheap"]["candidates"]["rows"] == n
    assert rep["cost"]["calls_saved_last_run"] == {"dear": n}
    assert rep["cost"]["per_correct"] == pytest.approx(ledger["total"]["cost"] / n, rel=1e-3)


@pytest.mark.parametrize(
    "ledger",
    [
        {"runs": [{"cost": "lots"}], "total": {"cost": "lots", "requests": "many"}},
        {"runs": "x", "total": [1]},
        {"runs": [1, {"quality": {"judges": {"a": {"accuracy": "high"}}}, "judges": [3]}]},
        {"runs": [{"cost": float("inf")}]},
    ],
)
def test_eval_with_a_ledger_of_odd_values_still_reports(handmade, capsys, ledger):
    """The ledger is a file beside the output: its figures are read as numbers only when they are ones."""
    o, g = handmade
    (o.parent / "out.jsonl.ledger.json").write_text(json.dumps(ledger).replace("Infinity", "1e999"))
    rc = main(["eval", str(o), "--gold", str(g), "--label-column", "gold", "--id-column", "key"])
    printed = capsys.readouterr()
    assert rc == 0 and "Traceback" not in printed.err, printed.err
    report = (o.parent / "out.jsonl.eval.json").read_text()
    assert "Infinity" not in report and "NaN" not in report and "$inf" not in printed.out


def test_eval_refuses_a_confidence_that_is_not_one(handmade, capsys):
    o, g = handmade
    recs = read_jsonl(o)
    recs[1]["confidence"] = "sure"
    o.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["eval", str(o), "--gold", str(g), "--label-column", "gold", "--id-column", "key"]) == 2
    err = capsys.readouterr().err.strip()
    assert "row 2 has confidence 'sure'" in err and "\n" not in err
