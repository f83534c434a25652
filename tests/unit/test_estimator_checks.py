"""Every scikit-learn estimator llmlabel exposes passes scikit-learn's own estimator checks, and the student keeps
scikit-learn's conventions on texts too (label dtype, NotFittedError, sample_weight, tags)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

import llmlabel
from llmlabel.distill.features import HashedNgramTfidf, LocalLLMEmbedder, MiniLMEmbedder
from llmlabel.distill.student import CandidateDistiller

ESTIMATORS = [
    CandidateDistiller(features=None),  # numeric features: every check runs
    CandidateDistiller(),  # texts: the checks its tags allow (scikit-learn has no generated text inputs)
    HashedNgramTfidf(),
    MiniLMEmbedder(),
    LocalLLMEmbedder(),
]


@parametrize_with_checks(ESTIMATORS)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


TEXTS = [f"{w} item number {i}" for i in range(40) for w in ("great",)] + [
    f"{w} item number {i}" for i in range(40) for w in ("awful",)
]


def test_tags_say_what_each_student_takes():
    text, numeric = get_tags(CandidateDistiller()), get_tags(CandidateDistiller(features=None))
    assert text.input_tags.string and not text.input_tags.two_d_array
    assert numeric.input_tags.two_d_array and numeric.input_tags.sparse and not numeric.input_tags.string
    assert get_tags(HashedNgramTfidf()).input_tags.string


def test_integer_labels_keep_their_dtype_and_score_works():
    y = np.array([1] * 40 + [0] * 40)
    model = CandidateDistiller().fit(TEXTS, y)
    assert model.classes_.dtype == y.dtype and model.classes_.tolist() == [0, 1]
    assert model.predict(TEXTS).dtype == y.dtype
    assert model.score(TEXTS, y) == 1.0  # was: "can't handle a mix of binary and unknown targets"
    strings = CandidateDistiller().fit(TEXTS, ["pos"] * 40 + ["neg"] * 40)
    assert strings.predict(["great item number 3"]).tolist() == ["pos"]


def test_not_fitted_and_sample_weight_on_texts():
    with pytest.raises(NotFittedError):
        CandidateDistiller().predict(["x"])
    with pytest.raises(NotFittedError):
        CandidateDistiller(features=None).predict_proba(np.zeros((1, 2)))
    y = ["pos"] * 40 + ["neg"] * 40
    # A row weighted 0 counts for nothing: its label never wins.
    w = np.array([1.0] * 40 + [0.0] * 40)
    model = CandidateDistiller().fit(TEXTS, y, sample_weight=w)
    assert set(model.predict(TEXTS).tolist()) == {"pos"}
    with pytest.raises(ValueError, match="sample_weight"):
        CandidateDistiller().fit(TEXTS, y, sample_weight=np.zeros(80))


def test_sparse_features_from_an_earlier_step_and_grid_search():
    y = ["pos"] * 40 + ["neg"] * 40
    pipe = make_pipeline(TfidfVectorizer(), CandidateDistiller(features=None))
    pipe.fit(TEXTS, y)
    assert pipe[-1].n_features_in_ == len(pipe[0].vocabulary_)
    assert pipe.score(TEXTS, y) == 1.0
    search = GridSearchCV(CandidateDistiller(), {"C": [1.0, 10.0]}, cv=2).fit(TEXTS, y)
    assert search.best_score_ == 1.0 and clone(search.best_estimator_).get_params()["C"] in (1.0, 10.0)


def test_candidates_still_train_through_the_refinery():
    cands = [["pos", "neg"] if i % 4 == 0 else (["pos"] if i < 40 else ["neg"]) for i in range(80)]
    model = CandidateDistiller().fit(TEXTS, candidates=cands)
    assert model.mode_ == "candidates" and model.classes_.tolist() == ["neg", "pos"]
    assert model.score(TEXTS, ["pos"] * 40 + ["neg"] * 40) == 1.0


def test_exported_from_the_package():
    assert "CandidateDistiller" in llmlabel.__all__ and llmlabel.CandidateDistiller is CandidateDistiller
