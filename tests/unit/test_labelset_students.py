"""The label-set students keep scikit-learn's conventions (clone / get_params, model selection; scikit-learn's
estimator checks skip text-only estimators) and save to a file that passes the archive checks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from llmlabel.distill.labelsets import MultiLabelDistiller, TaxonomyDistiller
from llmlabel.distill.training import check_archive, load_model, save_model

TEXTS = [f"{w} item {i}" for i in range(30) for w in ("sunny scary", "angry", "sunny")]
SETS = [s for _ in range(30) for s in (["joy", "fear"], ["anger"], ["joy"])]
PATHS = [p for _ in range(30) for p in (["weather", "storm"], ["mood", "anger"], ["weather", "sun"])]


@pytest.mark.slow
def test_clone_params_and_model_selection():
    ml = MultiLabelDistiller(C=1.0, threshold=0.4)
    assert clone(ml).get_params()["threshold"] == 0.4 and clone(ml).get_params()["C"] == 1.0
    with pytest.raises(NotFittedError):
        ml.predict(["x"])
    Y = np.array([[lab in s for lab in ("anger", "fear", "joy")] for s in SETS], dtype=int)
    search = GridSearchCV(MultiLabelDistiller(holdout=0), {"C": [0.1, 10.0]}, cv=KFold(3, shuffle=True, random_state=0))
    assert search.fit(TEXTS, Y).best_score_ == 1.0  # an indicator matrix y, scored by micro-F1
    tax = TaxonomyDistiller(threshold=0.3)
    assert clone(tax).get_params()["threshold"] == 0.3
    scores = cross_val_score(tax, TEXTS, np.array(PATHS, dtype=object), cv=KFold(3, shuffle=True, random_state=0))
    assert scores.mean() == 1.0


@pytest.mark.parametrize("kind", ["multi_label", "taxonomy"])
def test_a_saved_student_passes_the_archive_checks_and_loads(tmp_path, kind):
    model = MultiLabelDistiller().fit(TEXTS, SETS) if kind == "multi_label" else TaxonomyDistiller().fit(TEXTS, PATHS)
    card = {"kind": kind, "labels": [str(c) for c in model.classes_], "n_features": int(model.coef_.shape[1])}
    save_model(model, card, str(tmp_path / "m.skops"))
    check_archive(str(tmp_path / "m.skops"))
    back = load_model(str(tmp_path / "m.skops"))
    assert type(back) is type(model) and back.card_["kind"] == kind
    np.testing.assert_allclose(back.predict_proba(TEXTS[:6]), model.predict_proba(TEXTS[:6]))


@pytest.mark.parametrize("kind", ["multi_label", "taxonomy"])
def test_a_student_whose_parts_do_not_fit_together_is_refused_at_load(tmp_path, kind):
    """A crafted file with arrays of consistent shapes but a parent index outside its level, or thresholds for
    fewer labels than it has: refused by load_model (NotAModel, one line), not a traceback at predict time."""
    from llmlabel.distill.training import NotAModel

    if kind == "multi_label":
        model = MultiLabelDistiller().fit(TEXTS, SETS)
        model.thresholds_ = model.thresholds_[:-1]
        needle = "thresholds"
    else:
        model = TaxonomyDistiller().fit(TEXTS, PATHS)
        model.parents_[1] = model.parents_[1] + 5
        needle = "parent indices"
    save_model(model, {"kind": kind}, str(tmp_path / "m.skops"))
    with pytest.raises(NotAModel, match=needle):
        load_model(str(tmp_path / "m.skops"))
