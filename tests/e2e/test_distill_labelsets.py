"""`llmlabel distill` and `predict` on multi-label and taxonomy outputs of `llmlabel label`: a one-vs-rest
student learned from the label sets (per-label probabilities as soft targets), a student per taxonomy level
predicting top-down, saved and loaded like the single-label student, scored on held-out rows against the
teacher."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import yaml
from conftest import label_main, one_line_error, read_jsonl, run_main
from fakeserver import FakeLLM

from llmlabel.distill.labelsets import MultiLabelDistiller, TaxonomyDistiller
from llmlabel.distill.training import load_model, train_from_labeled

pytestmark = pytest.mark.slow  # each test takes over a second (conftest.py's rule)

LABELS = ["joy", "anger", "fear", "sadness"]
WORDS = {lab: [f"{lab[:3]}{k}" for k in range(6)] for lab in LABELS}
TREE = {"animals": {"mammals": ["dog", "cat"], "birds": ["eagle", "owl"]}, "vehicles": ["car", "bike"]}
LEAVES = [
    ("animals", "mammals", "dog"),
    ("animals", "mammals", "cat"),
    ("animals", "birds", "eagle"),
    ("animals", "birds", "owl"),
    ("vehicles", "car"),
    ("vehicles", "bike"),
]


def _text(r: random.Random, words: list[str], i: int) -> str:
    return f"row {i}: " + " ".join(r.choice(words) for _ in range(4))


def _multilabel_corpus(n: int = 180, seed: int = 0) -> tuple[list[dict[str, str]], dict[str, str]]:
    r = random.Random(seed)
    rows, answers = [], {}
    for i in range(n):
        labs = r.sample(LABELS, r.choice([1, 1, 2]))
        text = _text(r, [w for lab in labs for w in WORDS[lab]], i)
        rows.append({"id": f"t{i}", "text": text})
        answers[text] = "|".join(labs)
    return rows, answers


def _write(tmp_path, rows, cfg):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**cfg, "cache_dir": str(tmp_path / "cache")}))


@pytest.fixture
def multilabel_output(tmp_path, capsys):
    """`llmlabel label` on a multi-label task: two judges, one of them dropping a label now and then."""
    rows, answers = _multilabel_corpus()
    r = random.Random(5)
    noisy = {t: (a.split("|")[0] if "|" in a and r.random() < 0.5 else a) for t, a in answers.items()}
    servers = [FakeLLM(answers=answers, labels=LABELS).start(), FakeLLM(answers=noisy, labels=LABELS).start()]
    judges = [{"name": n, "model": "m", "base_url": s.base_url} for n, s in zip("ab", servers)]
    _write(tmp_path, rows, {"task": {"name": "emo", "labels": LABELS, "multi_label": True}, "judges": judges})
    out = tmp_path / "lab.csv"  # CSV: the sets and probabilities come back as text and are read as such
    rc, err = label_main(capsys, str(tmp_path / "in.jsonl"), "-c", str(tmp_path / "c.yaml"), "-o", str(out))
    assert rc == 0, err
    yield out, answers
    for s in servers:
        s.stop()


@pytest.mark.slow
def test_multilabel_output_trains_a_one_vs_rest_student(tmp_path, capsys, multilabel_output):
    out, answers = multilabel_output
    rc, _, err = run_main(capsys, "distill", str(out), "-o", str(tmp_path / "m.skops"))
    assert rc == 0, err
    assert "multi-label student" in err and "micro-F1" in err and "macro-F1" in err
    card = json.loads((tmp_path / "m.skops.card.json").read_text())
    assert card["kind"] == "multi_label" and card["labels"] == sorted(LABELS) and card["rows_used"] == 180
    assert set(card["thresholds"]) == set(LABELS) and card["allow_empty"] is False
    ho = card["heldout_vs_teacher"]
    assert ho["rows"] == 180 and ho["folds"] == 3 and ho["micro_f1"] > 0.8 and ho["macro_f1"] > 0.8

    model = load_model(str(tmp_path / "m.skops"))
    assert isinstance(model, MultiLabelDistiller) and model.card_["kind"] == "multi_label"
    new = ["new: joy0 joy1 fea2 fea3", "new: ang4 ang5 ang1 ang0"]
    sets = model.predict_sets(new)
    assert sorted(sets[0]) == ["fear", "joy"] and sets[1] == ["anger"]
    assert model.predict(new).shape == (2, 4) and model.predict(new).dtype == bool

    (tmp_path / "new.csv").write_text("id,text\n" + "".join(f"n{i},{t}\n" for i, t in enumerate(new)))
    rc, _, err = run_main(
        capsys, "predict", str(tmp_path / "m.skops"), str(tmp_path / "new.csv"), "-o", str(tmp_path / "p.csv")
    )
    assert rc == 0, err
    with open(tmp_path / "p.csv", newline="") as fh:
        got = {r["id"]: r for r in csv.DictReader(fh)}
    # Written as `llmlabel label` writes a multi-label row: the joined set in `label`, the list in `labels`.
    assert sorted(got["n0"]["label"].split("|")) == ["fear", "joy"] and got["n1"]["label"] == "anger"
    assert json.loads(got["n1"]["labels"]) == ["anger"] and set(json.loads(got["n0"]["probs"])) == set(LABELS)


def test_multilabel_student_learns_the_teachers_probabilities_as_soft_targets():
    """Two texts alike: the teacher names `fear` for each with probability 0.3 (below its threshold): trained
    on the hard sets the student never says fear; on the soft targets its probability for fear is near 0.3."""
    r = random.Random(1)
    texts = [_text(r, WORDS["joy"], i) for i in range(120)]
    sets = [["joy"] for _ in texts]
    probs = [{"joy": 1.0, "fear": 0.3, "anger": 0.0} for _ in texts]
    sets[0] = ["joy", "fear", "anger"]  # every label seen once
    hard = MultiLabelDistiller(holdout=0).fit(texts, sets)
    soft = MultiLabelDistiller(holdout=0).fit(texts, sets, probs=probs)
    fear = list(hard.classes_).index("fear")
    assert hard.predict_proba(texts[1:])[:, fear].mean() < 0.1
    assert 0.2 < soft.predict_proba(texts[1:])[:, fear].mean() < 0.4


def test_multilabel_thresholds_are_tuned_on_held_out_rows():
    """A label the teacher gives at a weak signal: its tuned threshold moves below 0.5 and the held-out rows
    decide it (set by `best_thresholds`, the rule that tunes a multi-label job's thresholds on gold rows)."""
    r = random.Random(2)
    texts, sets = [], []
    for i in range(400):
        labs = ["joy"] + (["fear"] if i % 3 == 0 else [])
        # fear's word appears in a third of its rows only, and never elsewhere: its probabilities stay low
        words = WORDS["joy"] + (["fea0"] if "fear" in labs and r.random() < 0.5 else [])
        texts.append(_text(r, words, i) + (" fea0" if "fear" in labs else ""))
        sets.append(labs)
    tuned = MultiLabelDistiller(C=0.05).fit(texts, sets)
    fixed = MultiLabelDistiller(C=0.05, holdout=0).fit(texts, sets)
    k = list(tuned.classes_).index("fear")
    assert fixed.thresholds_[k] == 0.5 and tuned.thresholds_[k] < 0.5
    truth = np.array([[lab in s for lab in tuned.classes_] for s in sets])
    assert (tuned.predict(texts)[:, k] == truth[:, k]).mean() > (fixed.predict(texts)[:, k] == truth[:, k]).mean()


def _taxonomy_corpus(n: int = 180, seed: int = 0) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
    r = random.Random(seed)
    rows, paths = [], {}
    for i in range(n):
        leaf = LEAVES[i % len(LEAVES)]
        words = [f"{leaf[-1]}{k}" for k in range(4)] + [f"{leaf[0]}{k}" for k in range(2)]
        text = _text(r, words, i)
        rows.append({"id": f"t{i}", "text": text})
        paths[text] = list(leaf)
    return rows, paths


@pytest.fixture
def taxonomy_output(tmp_path, capsys):
    rows, paths = _taxonomy_corpus()
    server = FakeLLM(paths=paths).start()
    judges = [{"name": "a", "model": "m", "base_url": server.base_url}]
    _write(tmp_path, rows, {"task": {"name": "things", "taxonomy": TREE}, "judges": judges})
    out = tmp_path / "lab.jsonl"
    rc, err = label_main(capsys, str(tmp_path / "in.jsonl"), "-c", str(tmp_path / "c.yaml"), "-o", str(out))
    assert rc == 0, err
    yield out, paths
    server.stop()


@pytest.mark.slow
def test_taxonomy_output_trains_a_student_per_level(tmp_path, capsys, taxonomy_output):
    out, paths = taxonomy_output
    assert {len(r["path"]) for r in read_jsonl(out)} == {2, 3}
    rc, _, err = run_main(capsys, "distill", str(out), "-o", str(tmp_path / "m.skops"))
    assert rc == 0, err
    assert "taxonomy student" in err and "level 1" in err and "level 3" in err
    card = json.loads((tmp_path / "m.skops.card.json").read_text())
    assert card["kind"] == "taxonomy" and card["depth"] == 3 and card["rows_per_level"] == [180, 180, 120]
    ho = card["heldout_vs_teacher"]
    assert [lv["level"] for lv in ho["levels"]] == [1, 2, 3] and ho["rows"] == 180
    assert all(lv["accuracy"] > 0.9 for lv in ho["levels"])

    model = load_model(str(tmp_path / "m.skops"))
    assert isinstance(model, TaxonomyDistiller)
    (tmp_path / "new.csv").write_text("id,text\nn1,owl0 owl1 owl2 animals0\nn2,bike1 bike2 bike3 vehicles1\n")
    rc, _, err = run_main(
        capsys, "predict", str(tmp_path / "m.skops"), str(tmp_path / "new.csv"), "-o", str(tmp_path / "p.jsonl")
    )
    assert rc == 0, err
    got = {p["id"]: p for p in read_jsonl(tmp_path / "p.jsonl")}
    assert got["n1"]["path"] == ["animals", "birds", "owl"] and got["n1"]["label"] == "owl"
    assert got["n1"]["depth"] == 3 and len(got["n1"]["level_confidence"]) == 3
    assert got["n2"]["path"] == ["vehicles", "bike"] and set(got["n2"]["probs"]) == {"car", "bike"}


def test_taxonomy_student_predicts_within_the_parents_children_and_stops_when_unsure():
    r = random.Random(3)
    texts, paths = [], []
    for i in range(240):
        leaf = LEAVES[i % len(LEAVES)]
        texts.append(_text(r, [f"{leaf[-1]}{k}" for k in range(3)] + [f"{leaf[0]}{k}" for k in range(2)], i))
        paths.append(list(leaf))
    m = TaxonomyDistiller().fit(texts, paths)
    assert m.levels_[0] == [["animals"], ["vehicles"]]
    # Level-1 words of an animal, level-2 words of a car: the level-2 student chooses among the children of
    # animals only, never vehicles/car.
    p = m.predict(["animals0 animals1 animals0 car0 car1"])[0]
    assert p[0] == "animals" and p[1] in ("mammals", "birds")
    assert tuple(m.predict(["vehicles0 vehicles1 bike0"])[0]) == ("vehicles", "bike")
    # owl and eagle equally likely: below a 0.9 threshold the row stops at birds, above 0.01 it takes one.
    out = TaxonomyDistiller(threshold=0.9).fit(texts, paths).predict_paths(["animals0 owl0 eagle0 owl1 eagle1"])[0]
    assert out["path"] == ["animals", "birds"] and out["depth"] == 2 and len(out["level_confidence"]) == 3
    assert out["level_confidence"][2] < 0.9 and out["label"] == "birds"
    low = TaxonomyDistiller(threshold=0.01).fit(texts, paths).predict_paths(["animals0 owl0 eagle0 owl1 eagle1"])[0]
    assert low["depth"] == 3
    P = m.predict_proba(texts[:5])
    top = [i for i, c in enumerate(m.classes_) if "/" not in c]
    assert np.allclose(P[:, top].sum(axis=1), 1.0)


def test_distill_refuses_what_does_not_apply_in_one_line(tmp_path, capsys, taxonomy_output):
    out, _ = taxonomy_output
    rc, _, err = run_main(capsys, "distill", str(out), "-o", str(tmp_path / "m.skops"), "--mode", "single")
    one_line_error(rc, err, "is a taxonomy output", "--mode single is for single-label outputs")
    rc, _, err = run_main(capsys, "distill", str(out), "-o", str(tmp_path / "m.skops"), "--max-rounds", "3")
    one_line_error(rc, err, "max_rounds does not apply")
    rows = read_jsonl(out)
    mixed = tmp_path / "mixed.jsonl"
    single = {"id": "s", "text": "x", "label": "dog", "confidence": 1.0, "candidates": ["dog"], "error": None}
    mixed.write_text("".join(json.dumps(x) + "\n" for x in rows[:3] + [single]))
    rc, _, err = run_main(capsys, "distill", str(mixed), "-o", str(tmp_path / "m.skops"))
    one_line_error(rc, err, "row 1 is a taxonomy row but row 4 a label row")
    assert not (tmp_path / "m.skops").exists()


def test_train_from_labeled_api_on_a_multilabel_output(multilabel_output):
    out, _ = multilabel_output
    model, card = train_from_labeled(str(out), cv=False)
    assert isinstance(model, MultiLabelDistiller) and card["heldout_vs_teacher"] is None
    assert card["teacher_agreement"]["micro_f1"] > 0.9
