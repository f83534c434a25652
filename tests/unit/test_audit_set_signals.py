"""The multi-label audit's signals on small synthetic sets: given sets read as eval reads them, the judges'
per-label Dawid-Skene, cleanlab's multi-label method over out-of-fold per-label probabilities, and the flags."""

from __future__ import annotations

import random

import numpy as np
import pytest

from llmlabel.auditing.multilabel import given_sets, score_set_signals, set_records
from llmlabel.auditing.signals import auroc
from llmlabel.errors import InputError

LABELS = ["l0", "l1", "l2", "l3", "l4", "l5"]


def _data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """True sets, given sets with 20 labels dropped and 20 added, and texts made of each true label's words."""
    rng = np.random.default_rng(seed)
    K = len(LABELS)
    truth = rng.random((n, K)) < 0.25
    truth[truth.sum(axis=1) == 0, 0] = True
    words = [[f"w{k}x{j}" for j in range(6)] for k in range(K)]
    texts = [
        " ".join(w for k in np.flatnonzero(truth[i]) for w in random.Random(int(i * 10 + k)).sample(words[k], 3))
        + " and so on"
        for i in range(n)
    ]
    given = truth.copy()
    for i in rng.choice(n, 20, replace=False):
        given[i, rng.choice(np.flatnonzero(given[i]))] = False
    for i in rng.choice(n, 20, replace=False):
        given[i, rng.choice(np.flatnonzero(~given[i]))] = True
    return truth, given, texts


def test_given_sets_read_every_representation_eval_reads():
    got = given_sets(["l0|l2", ["l1"], '["l3", "l4"]', np.array(["l5"]), "", None], LABELS, "x")
    assert [[LABELS[k] for k in np.flatnonzero(r)] for r in got] == [["l0", "l2"], ["l1"], ["l3", "l4"], ["l5"], [], []]
    with pytest.raises(InputError, match=r"'nope' \(2 rows\).*task.labels"):
        given_sets(["l0|nope", "nope"], LABELS, "in.csv")


def test_cleanlab_multilabel_signal_finds_injected_errors_without_judges():
    """No judge answered (votes -1): the classifier and cleanlab's multi-label method carry the audit."""
    truth, given, texts = _data()
    n, K = given.shape
    sig = score_set_signals(np.full((n, 0, K), -1, dtype=np.int8), given, [], texts)
    wrong_rows = (truth != given).any(axis=1)
    assert sig.cleanlab_score is not None and sig.cleanlab_issue is not None and sig.cleanlab_pairs is not None
    assert auroc(-sig.cleanlab_score, wrong_rows) > 0.9
    wrong = truth != given
    hits = (sig.cleanlab_pairs & wrong).sum()
    assert hits / wrong.sum() >= 0.7 and hits / sig.cleanlab_pairs.sum() >= 0.7
    flagged_rows = sig.cleanlab_issue
    assert (flagged_rows & wrong_rows).sum() / flagged_rows.sum() >= 0.7
    recs, summary = set_records([str(i) for i in range(n)], texts, given, LABELS, sig, 0.8, False)
    assert summary["signals"]["cleanlab_pairs"] == int(sig.cleanlab_pairs.sum())
    by_id = {r.id: r for r in recs}
    i, k = np.argwhere(sig.cleanlab_pairs)[0]
    assert LABELS[k] in (by_id[str(i)].cleanlab_suspects or []) and by_id[str(i)].cleanlab_issue is not None


def test_judges_signal_alone_flags_missing_and_extra():
    truth, given, _ = _data(seed=1)
    n, K = given.shape
    rng = np.random.default_rng(2)
    # Judges name a label that applies 85% of the time, one that does not 3% of the time.
    u = rng.random((n, 3, K))
    votes = np.where(truth[:, None, :], u < 0.85, u < 0.03).astype(np.int8)
    sig = score_set_signals(votes, given, ["a", "b", "c"], None)
    assert sig.cleanlab_score is None and sig.classifier_note == "disabled"
    recs, summary = set_records([str(i) for i in range(n)], [""] * n, given, LABELS, sig, 0.8, False)
    missing = {(int(r.id), LABELS.index(lab)) for r in recs for lab in r.missing or {}}
    extra = {(int(r.id), LABELS.index(lab)) for r in recs for lab in r.extra or {}}
    assert all(not given[p] for p in missing) and all(given[p] for p in extra)
    # Most flagged missing labels apply, most flagged extra ones do not, and most injected errors are found.
    right = sum(truth[p] for p in missing) + sum(not truth[p] for p in extra)
    assert right >= 0.8 * len(missing | extra) and right >= 0.8 * (truth != given).sum()
    assert missing and extra
    # The rates Dawid-Skene learns are the simulated ones: judges 0.85 / 0.03, the given sets' from the injection.
    assert all(abs(summary["judges"][j]["recall"] - 0.85) < 0.05 for j in "abc")
    assert all(abs(summary["judges"][j]["false_add_rate"] - 0.03) < 0.015 for j in "abc")
    assert abs(summary["given_labels"]["recall"] - (given & truth).sum() / truth.sum()) < 0.02
    assert summary["flagged"] == sum(r.flagged for r in recs) == len({p[0] for p in missing | extra})
