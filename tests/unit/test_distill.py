"""Distillation on a synthetic problem where the teacher is noisy but its candidate sets are not."""

from __future__ import annotations

import inspect
import json
import random

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline

from llmlabel.distill import CandidateDistiller
from llmlabel.distill.features import HashedNgramTfidf, make_featurizer
from llmlabel.distill.training import load_model, predict_rows, save_model, train_from_labeled

CLASSES = ["finance", "sports", "health", "travel"]
KEYWORDS = {
    "finance": ["stocks", "bank", "loan", "interest", "market", "budget", "invest", "tax"],
    "sports": ["match", "goal", "team", "coach", "league", "score", "player", "season"],
    "health": ["doctor", "vaccine", "diet", "clinic", "fever", "sleep", "therapy", "nurse"],
    "travel": ["flight", "hotel", "beach", "passport", "luggage", "tour", "train", "visa"],
}
FILLER = "the a of about my our your this that new old big small good bad really quite today week".split()
TEMPLATES = [
    "I read about the {k1} and the {k2} {f1}",
    "{f1} news on {k1} {f2} {k2}",
    "why is my {k1} so {f1} this {f2}",
    "{f1} {f2} question about {k1}",
    "tell me about {k1} {f1} {k2} {f2}",
]


def make_problem(n: int = 1500, seed: int = 0):
    """Texts with class keywords plus noise, and a teacher whose single label is right 70% of
    the time (mostly confusing each class with one fixed other class, like real LLMs) while its
    candidate set covers the gold label 90% of the time."""
    rng = random.Random(seed)
    confuse = {c: CLASSES[(i + 1) % len(CLASSES)] for i, c in enumerate(CLASSES)}
    texts, gold, single, cands = [], [], [], []
    for _ in range(n):
        g = rng.choice(CLASSES)
        kw = KEYWORDS[g] if rng.random() < 0.85 else KEYWORDS[rng.choice(CLASSES)]  # some keyword noise
        t = rng.choice(TEMPLATES).format(
            k1=rng.choice(KEYWORDS[g]), k2=rng.choice(kw), f1=rng.choice(FILLER), f2=rng.choice(FILLER)
        )
        if rng.random() < 0.7:
            s = g
            c = [g] + ([confuse[g]] if rng.random() < 0.4 else [])
        else:
            s = confuse[g] if rng.random() < 0.8 else rng.choice([x for x in CLASSES if x != g])
            c = [s, g] if rng.random() < 0.67 else [s]  # covers gold: 0.7 + 0.3 * 0.67 = 0.9
        texts.append(t)
        gold.append(g)
        single.append(s)
        cands.append(c)
    return texts, gold, single, cands


@pytest.fixture(scope="module")
def problem():
    texts, gold, single, cands = make_problem(1500, seed=0)
    test_texts, test_gold, _, _ = make_problem(600, seed=1)
    return texts, gold, single, cands, test_texts, np.array(test_gold, dtype=object)


def test_teacher_is_as_noisy_as_specified(problem):
    texts, gold, single, cands, *_ = problem
    acc = np.mean([s == g for s, g in zip(single, gold)])
    cov = np.mean([g in c for g, c in zip(gold, cands)])
    assert 0.66 < acc < 0.74 and 0.87 < cov < 0.93


@pytest.mark.slow
def test_candidate_student_beats_single_label_student(problem):
    texts, gold, single, cands, test_texts, test_gold = problem
    single_student = CandidateDistiller().fit(texts, y=single)
    cand_student = CandidateDistiller().fit(texts, candidates=cands, y=single)
    acc_single = np.mean(single_student.predict(test_texts) == test_gold)
    acc_cand = np.mean(cand_student.predict(test_texts) == test_gold)
    chance = 1 / len(CLASSES)
    assert acc_single > chance + 0.2 and acc_cand > chance + 0.2
    assert acc_cand > acc_single + 0.02, (acc_cand, acc_single)
    assert cand_student.mode_ == "candidates" and single_student.mode_ == "single"
    assert len(cand_student.history_) >= 2  # the refinery ran rounds


def test_shapes_and_classes(problem):
    texts, _, single, cands, test_texts, _ = problem
    m = CandidateDistiller(max_rounds=2).fit(np.array(texts, dtype=object), candidates=cands)
    assert list(m.classes_) == sorted(CLASSES)
    P = m.predict_proba(test_texts[:17])
    assert P.shape == (17, 4) and np.allclose(P.sum(axis=1), 1)
    pred = m.predict(test_texts[:17])
    assert pred.shape == (17,) and set(pred) <= set(CLASSES)
    assert np.array_equal(pred, m.classes_[P.argmax(axis=1)])


# -- scikit-learn conventions: fit(X, y) with X texts and y labels, candidates= as a keyword --------


def test_cross_val_score_learns_words_not_characters(problem):
    texts, gold, *_ = problem
    X, y = texts[:600], gold[:600]
    scores = cross_val_score(CandidateDistiller(), X, y, cv=3)
    assert scores.mean() > 0.8, scores  # chance is 0.25
    m = CandidateDistiller().fit(X, y)
    assert list(m.classes_) == sorted(CLASSES)  # labels, not the characters of the labels
    assert m.score(X, y) > 0.9


def test_clone_and_params():
    m = CandidateDistiller(C=3.0, max_rounds=2)
    c = clone(m)
    assert c.get_params() == m.get_params() and c is not m
    assert set(m.get_params()) == set(inspect.signature(CandidateDistiller.__init__).parameters) - {"self"}
    c.set_params(C=0.5)
    assert c.C == 0.5 and m.C == 3.0
    fitted = CandidateDistiller(max_rounds=1).fit(["red apple", "blue sky"] * 20, ["x", "y"] * 20)
    assert not hasattr(clone(fitted), "classes_")


def test_grid_search_over_a_param(problem):
    texts, gold, *_ = problem
    gs = GridSearchCV(CandidateDistiller(), {"C": [0.001, 10.0]}, cv=3).fit(texts[:450], gold[:450])
    assert gs.best_params_ == {"C": 10.0} and gs.best_score_ > 0.8
    assert set(gs.predict(texts[450:500])) <= set(CLASSES)


def test_pipeline_with_candidates_as_fit_param(problem):
    texts, gold, single, cands, test_texts, test_gold = problem
    pipe = Pipeline(
        [("tfidf", HashedNgramTfidf(analyzer="word", ngram_range=(1, 2))), ("clf", CandidateDistiller(features=None))]
    )
    pipe.fit(texts, single, clf__candidates=cands)
    assert pipe.named_steps["clf"].mode_ == "candidates"
    assert np.mean(pipe.predict(test_texts) == test_gold) > 0.7
    plain = Pipeline([("clf", CandidateDistiller())]).fit(texts, gold)
    assert np.mean(plain.predict(test_texts) == test_gold) > 0.8


@pytest.mark.slow
def test_fit_with_candidates_keyword_and_missing_labels(problem):
    texts, gold, single, cands, test_texts, test_gold = problem
    y = [s if i % 3 else None for i, s in enumerate(single)]  # a third of the teacher's labels missing
    m = CandidateDistiller().fit(texts, y, candidates=cands)
    assert m.mode_ == "candidates" and np.mean(m.predict(test_texts) == test_gold) > 0.7
    m2 = CandidateDistiller().fit(texts, candidates=cands, sample_weight=np.full(len(texts), 2.0))
    assert m2.mode_ == "candidates" and np.mean(m2.predict(test_texts) == test_gold) > 0.7
    with pytest.raises(TypeError, match="candidates="):
        CandidateDistiller().fit(texts, cands)  # the old positional order is caught, not learned
    with pytest.raises(ValueError, match="rows"):
        CandidateDistiller().fit(texts, single[:10])
    with pytest.raises(ValueError, match="requires y"):  # the words scikit-learn's check_requires_y_none expects
        CandidateDistiller().fit(texts)


@pytest.mark.slow
def test_round_chosen_by_teacher_agreement(problem):
    texts, _, single, cands, *_ = problem
    m = CandidateDistiller().fit(texts, single, candidates=cands)
    scores = [h["score"] for h in m.history_]
    assert all(len(s) == 3 for s in scores)  # (agreement, in-set rate, log-likelihood)
    assert m.holdout_score_[0] == max(s[0] for s in scores)
    no_teacher = CandidateDistiller().fit(texts, candidates=cands)
    assert all(len(h["score"]) == 2 for h in no_teacher.history_)  # (in-set rate, log-likelihood)
    in_set = CandidateDistiller(select_round="in_set").fit(texts, single, candidates=cands)
    assert all(len(h["score"]) == 2 for h in in_set.history_)  # CanDist's criterion, on request


def test_featurizer_kinds():
    X = make_featurizer("tfidf").fit_transform(["hello world", "hello there", "world peace"] * 50)
    assert X.shape[0] == 150 and X.dtype == np.float32
    assert np.allclose(np.asarray(X.multiply(X).sum(axis=1)).ravel(), 2.0, atol=1e-4)  # two l2 blocks
    with pytest.raises(ValueError):
        make_featurizer("nope")


def _write_labeled(path, texts, single, cands, gold):
    with open(path, "w", encoding="utf-8") as fh:
        for i, (t, s, c, g) in enumerate(zip(texts, single, cands, gold)):
            row = {
                "id": f"r{i}",
                "text": t,
                "label": s,
                "candidates": c,
                "confidence": 0.9 if s == g else 0.5,
                "error": None,
            }
            if i % 100 == 0:  # rows the trainer must skip
                row.update(label=None, candidates=None, error="timeout")
            fh.write(json.dumps(row) + "\n")


@pytest.mark.slow
def test_train_save_load_round_trip(problem, tmp_path):
    texts, gold, single, cands, test_texts, _ = problem
    src = tmp_path / "labeled.jsonl"
    _write_labeled(src, texts, single, cands, gold)
    model, card = train_from_labeled(str(src), mode="candidates", features="tfidf", weight_by_confidence=True)
    for key in (
        "labels",
        "rows_used",
        "mode",
        "features",
        "teacher_agreement",
        "cv_accuracy_vs_teacher",
        "training_seconds",
        "sklearn_version",
    ):
        assert key in card, key
    assert card["rows_used"] == 1500 - 15 and card["mode"] == "candidates"
    assert card["labels"] == sorted(CLASSES)
    assert 0.5 < card["cv_accuracy_vs_teacher"] <= 1 and 0.5 < card["teacher_agreement"] <= 1

    path = tmp_path / "model.skops"
    save_model(model, card, str(path))
    assert json.loads((tmp_path / "model.skops.card.json").read_text())["rows_used"] == card["rows_used"]
    loaded = load_model(str(path))
    assert loaded.card_["mode"] == "candidates"
    assert np.array_equal(loaded.predict(test_texts), model.predict(test_texts))
    assert np.allclose(loaded.predict_proba(test_texts), model.predict_proba(test_texts))

    rows = [{"id": i, "text": t} for i, t in enumerate(test_texts)]
    out = list(predict_rows(loaded, rows, batch_size=64))
    assert [o["id"] for o in out] == list(range(len(test_texts)))
    assert [o["label"] for o in out] == list(model.predict(test_texts))
    assert set(out[0]["probs"]) == set(CLASSES) and abs(sum(out[0]["probs"].values()) - 1) < 1e-3


def test_single_mode_from_csv(problem, tmp_path):
    texts, gold, single, cands, *_ = problem
    src = tmp_path / "labeled.csv"
    import csv

    with open(src, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label", "candidates", "confidence", "error"])
        for i, (t, s, c) in enumerate(zip(texts[:300], single, cands)):
            w.writerow([i, t, s, json.dumps(c), 0.8, ""])
    model, card = train_from_labeled(str(src), mode="single", features="tfidf", weight_by_confidence=False)
    assert card["mode"] == "single" and card["rows_used"] == 300
    assert model.mode_ == "single"


def test_cli_offers_every_featurizer():
    from llmlabel.cli.distill import FEATURES
    from llmlabel.distill.features import FEATURIZERS

    assert FEATURES == list(FEATURIZERS)
