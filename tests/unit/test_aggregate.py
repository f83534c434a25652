import numpy as np
import pandas as pd
import pytest

from llmlabel.ensemble.aggregate import (
    DawidSkeneResult,
    agreement_weights,
    dawid_skene,
    gold_weights,
    weighted,
)
from llmlabel.ensemble.candidates import aggregate_candidates, candidate_scores, dawid_skene_candidates
from llmlabel.ensemble.combine import combine_row, refit
from llmlabel.ensemble.judges import judge_kappas, uninformative
from llmlabel.io.records import from_record, to_record
from llmlabel.llm.answers import JudgeAnswer
from llmlabel.results import RowResult

K = 6
ACCS = [0.85, 0.70, 0.60]


def confusion(acc: float, K: int = K) -> np.ndarray:
    """Systematic errors: 70% of mistakes go to the next class, the rest spread out."""
    C = np.zeros((K, K))
    for k in range(K):
        nxt = (k + 1) % K
        C[k, k] = acc
        C[k, nxt] = (1 - acc) * 0.7
        others = [l for l in range(K) if l not in (k, nxt)]
        C[k, others] = (1 - acc) * 0.3 / len(others)
    return C


def synth(n: int, seed: int, miss: float = 0.0, accs=ACCS):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    Cs = np.stack([confusion(a) for a in accs])
    votes = np.empty((n, len(accs)), dtype=int)
    for j in range(len(accs)):
        cum = Cs[j][y].cumsum(axis=1)
        votes[:, j] = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), K - 1)
    votes[rng.random(votes.shape) < miss] = -1
    return y, votes, Cs


def acc(post, y):
    return float((post.argmax(axis=1) == y).mean())


# --- simple voting -----------------------------------------------------------


def majority(votes: np.ndarray, K: int) -> np.ndarray:
    """The plain vote baseline: an equal-weight vote (softmax of vote counts; argmax = plurality)."""
    return weighted(votes, K, np.ones(votes.shape[1]))


def test_votes_outside_the_labels_are_rejected():
    with pytest.raises(ValueError):
        weighted(np.array([[0, 3]]), 3, np.ones(2))


def test_weighted_vote_matches_log_odds():
    votes = np.array([[0, 1, 1], [0, -1, -1], [-1, -1, -1]])
    w = np.array([3.0, 1.0, 1.0])
    p = weighted(votes, 2, w)
    # judge 0 (weight 3) outvotes two weight-1 judges
    np.testing.assert_allclose(p[0], np.exp([3, 2]) / np.exp([3, 2]).sum())
    np.testing.assert_allclose(p[2], [0.5, 0.5])


def test_agreement_weights_rank_judges():
    y, votes, _ = synth(3000, seed=1)
    w = agreement_weights(votes, K)
    assert w[0] > w[1] > w[2] > 0
    # weighted vote should be at least as good as plain majority
    assert acc(weighted(votes, K, w), y) >= acc(majority(votes, K), y)


def test_gold_weights_laplace():
    votes = np.array([[0, 1], [1, 1], [0, 0], [1, -1]])
    gold = {0: 0, 1: 1, 2: 0, 3: 1}
    w = gold_weights(votes, 2, gold)
    # judge 0: 4/4 correct -> (4+1)/(4+2); judge 1: 2/3 -> 3/5
    a = np.array([5 / 6, 3 / 5])
    np.testing.assert_allclose(w, np.log(a / (1 - a)))
    # below-chance judges are floored at weight log(K-1) + logit(1/K) = 0
    assert gold_weights(np.array([[1], [0]]), 2, {0: 0, 1: 1})[0] == pytest.approx(0.0)


# --- Dawid-Skene ---------------------------------------------------------------


def test_ds_recovers_confusions_and_beats_majority():
    y, votes, Cs = synth(2000, seed=0)
    r = dawid_skene(votes, K)
    assert isinstance(r, DawidSkeneResult)
    assert r.posteriors.shape == (2000, K) and r.confusions.shape == (3, K, K)
    np.testing.assert_allclose(r.posteriors.sum(axis=1), 1)
    np.testing.assert_allclose(r.confusions.sum(axis=2), 1)
    assert acc(r.posteriors, y) > acc(majority(votes, K), y) + 0.05
    np.testing.assert_allclose(r.accuracies, ACCS, atol=0.05)
    np.testing.assert_allclose(r.priors, 1 / K, atol=0.03)


def test_ds_confusion_diagonals_within_005_with_more_data():
    # Per-class diagonals need more items than 2000 to beat sampling noise.
    y, votes, Cs = synth(20000, seed=3)
    r = dawid_skene(votes, K)
    est = np.diagonal(r.confusions, axis1=1, axis2=2)
    true = np.diagonal(Cs, axis1=1, axis2=2)
    assert np.abs(est - true).max() < 0.05
    assert np.abs(r.confusions - Cs).max() < 0.05


@pytest.mark.slow
def test_ds_agrees_with_crowdkit():
    from crowdkit.aggregation import DawidSkene

    y, votes, _ = synth(2000, seed=0, miss=0.1)
    r = dawid_skene(votes, K)
    i, j = np.nonzero(votes >= 0)
    df = pd.DataFrame({"task": i, "worker": j, "label": votes[i, j]})
    # crowd-kit's default tol=1e-5 on its ELBO can stop ~20 iterations early,
    # which alone flips ~1% of labels on some seeds; compare converged fits.
    ck = DawidSkene(n_iter=300, tol=1e-7).fit(df).labels_
    ours = pd.Series(r.labels).loc[ck.index.to_numpy()]
    assert (ours.to_numpy() == ck.to_numpy()).mean() >= 0.99


def test_ds_gold_anchoring_keeps_accuracy_and_clamps():
    y, votes, _ = synth(1500, seed=7, accs=[0.55, 0.5, 0.45])
    gold = {i: int(y[i]) for i in range(150)}
    base = dawid_skene(votes, K)
    anch = dawid_skene(votes, K, gold=gold)
    rest = slice(150, None)
    # With well-behaved judges gold can only nudge the estimates; allow noise.
    assert acc(anch.posteriors[rest], y[rest]) >= acc(base.posteriors[rest], y[rest]) - 0.01
    np.testing.assert_allclose(anch.posteriors[:150], np.eye(K)[y[:150]])


def test_ds_gold_anchoring_fixes_shared_systematic_confusion():
    # Two of three judges mostly answer (true + 1) mod K: majority vote and
    # unsupervised DS settle on the shifted labeling; 5% gold must anchor it.
    rng = np.random.default_rng(0)
    n = 1500
    y = rng.integers(0, K, n)
    Cs = np.stack([confusion(0.75)] + [np.roll(confusion(0.65), 1, axis=1)] * 2)
    votes = np.stack(
        [np.minimum((rng.random(n)[:, None] > C[y].cumsum(axis=1)).sum(axis=1), K - 1) for C in Cs], axis=1
    )
    gold = {i: int(y[i]) for i in range(75)}
    rest = slice(75, None)
    base = acc(dawid_skene(votes, K).posteriors[rest], y[rest])
    anch_r = dawid_skene(votes, K, gold=gold)
    anch = acc(anch_r.posteriors[rest], y[rest])
    assert base < 0.3 and anch > 0.85
    true_acc = np.diagonal(Cs, axis1=1, axis2=2).mean(axis=1)  # [0.75, ~0.03, ~0.03]
    np.testing.assert_allclose(anch_r.accuracies, true_acc, atol=0.05)


def test_ds_missing_votes():
    y, votes, _ = synth(3000, seed=11, miss=0.3)
    votes[:20] = -1  # items nobody labeled
    r = dawid_skene(votes, K)
    assert np.isfinite(r.posteriors).all()
    # no evidence -> posterior = prior (up to EM convergence)
    np.testing.assert_allclose(r.posteriors[:20], np.tile(r.priors, (20, 1)), atol=1e-3)
    answered = (votes >= 0).any(axis=1)
    assert acc(r.posteriors[answered], y[answered]) > acc(majority(votes, K)[answered], y[answered])


def test_ds_scales_to_large_input():
    # Pattern compression keeps 10^5 items well under a second.
    y, votes, _ = synth(100_000, seed=2)
    r = dawid_skene(votes, K)
    assert acc(r.posteriors, y) > 0.9


def test_ds_degenerate_inputs():
    r = dawid_skene(np.full((4, 2), -1), 3)
    np.testing.assert_allclose(r.posteriors, 1 / 3)
    r = dawid_skene(np.array([[1, 1], [1, 1]]), 3)
    assert (r.labels == 1).all()
    with pytest.raises(ValueError):
        dawid_skene(np.array([[0, 1]]), 2, gold={5: 0})


# --- candidate sets ------------------------------------------------------------


def test_candidate_scores_and_aggregation():
    cand = np.zeros((3, 3, 4), dtype=bool)
    cand[0, 0, [0, 1]] = True
    cand[0, 1, [0]] = True
    cand[0, 2, [0, 2]] = True
    cand[1, 0, [1]] = True
    cand[1, 1, [2]] = True  # judge 2 silent; nothing reaches 0.75
    # row 2: no answers
    s = candidate_scores(cand)
    np.testing.assert_allclose(s[0], [1, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(s[1], [0, 0.5, 0.5, 0])
    np.testing.assert_allclose(s[2], 0)
    out = aggregate_candidates(cand, threshold=0.75)
    assert out[0].tolist() == [True, False, False, False]
    assert out[1].tolist() == [False, True, True, False]  # fallback keeps argmax ties
    assert out[2].all()  # no information: every label stays possible
    assert aggregate_candidates(cand, threshold=1 / 3)[0].tolist() == [True, True, True, False]


def synth_candidates(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    recall = np.array([0.95, 0.85, 0.75])
    theta = np.zeros((3, K, K))
    for j, r in enumerate(recall):
        theta[j] = 0.05
        for k in range(K):
            theta[j, k, k] = r
            theta[j, k, (k + 1) % K] = 0.4  # systematic confusable neighbor
    cand = rng.random((n, 3, K)) < theta[:, y].transpose(1, 0, 2)
    return y, cand, theta


def test_ds_candidates_recovers_inclusion_rates():
    y, cand, theta = synth_candidates(10000, seed=4)
    r = dawid_skene_candidates(cand, K)
    assert r.posteriors.shape == (10000, K)
    np.testing.assert_allclose(r.posteriors.sum(axis=1), 1)
    base = candidate_scores(cand).argmax(axis=1)
    assert acc(r.posteriors, y) >= float((base == y).mean())
    # Empty sets count as "no answer", so the model estimates inclusion rates
    # conditional on a non-empty set: theta / (1 - P(empty | k)).
    p_empty = np.prod(1 - theta, axis=2, keepdims=True)
    target = theta / (1 - p_empty)
    est = np.diagonal(r.confusions, axis1=1, axis2=2)
    assert np.abs(est - np.diagonal(target, axis1=1, axis2=2)).max() < 0.05
    # Off-diagonals: conditioning on a non-empty set makes inclusions slightly
    # dependent, which the independent-Bernoulli model ignores.
    assert np.abs(r.confusions - target).max() < 0.07


def test_ds_candidates_gold_and_empty_sets():
    y, cand, _ = synth_candidates(800, seed=9)
    cand[:5] = False
    gold = {i: int(y[i]) for i in range(10, 60)}
    r = dawid_skene_candidates(cand, K, gold=gold)
    np.testing.assert_allclose(r.posteriors[10:60], np.eye(K)[y[10:60]])
    base = dawid_skene_candidates(cand, K)
    assert acc(r.posteriors[60:], y[60:]) >= acc(base.posteriors[60:], y[60:]) - 0.01
    np.testing.assert_allclose(r.posteriors[:5], np.tile(r.priors, (5, 1)), atol=1e-3)
    with pytest.raises(ValueError):
        dawid_skene_candidates(cand, K + 1)


# ---------------------------------------------------------------- judges that carry no information


def _binary_judges(n: int = 300, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Truth with 30% positives; a 0.85 judge, a 0.75 judge, and one saying "positive" (1) to everything."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    good = np.where(rng.random(n) < 0.85, y, 1 - y)
    fair = np.where(rng.random(n) < 0.75, y, 1 - y)
    return y, np.stack([good, fair, np.ones(n, np.int64)], axis=1)


def test_kappa_flags_a_constant_judge_and_a_guesser_but_not_good_ones():
    y, votes = _binary_judges()
    kappa = judge_kappas(votes, 2)
    assert kappa[0] > 0.2 and kappa[1] > 0.2 and abs(kappa[2]) < 1e-9
    assert uninformative(votes, 2).tolist() == [False, False, True]
    guesser = np.random.default_rng(5).integers(0, 2, len(y))
    assert uninformative(np.column_stack([votes[:, :2], guesser]), 2).tolist() == [False, False, True]
    # Gold (10+ rows) is the reference when given: the same verdicts.
    assert uninformative(votes, 2, gold={i: int(y[i]) for i in range(40)}).tolist() == [False, False, True]


def test_two_judges_the_constant_one_is_left_out_and_tiny_jobs_are_left_alone():
    _, votes = _binary_judges()
    assert uninformative(votes[:, [0, 2]], 2).tolist() == [False, True]
    assert uninformative(votes[:, [2, 0]], 2).tolist() == [True, False]
    assert not uninformative(votes[:15], 2).any()  # too few rows to judge a judge
    assert not uninformative(np.ones((50, 2), np.int64), 2).any()  # never leaves out every judge


def test_refit_never_follows_a_constant_judge_below_the_best_one():
    labels = ["negative", "positive"]
    y, votes = _binary_judges()
    names = ["good", "fair", "always"]
    recs = []
    for i, v in enumerate(votes):
        answers = {n: JudgeAnswer(label=labels[v[j]]) for j, n in enumerate(names)}
        # "always" is sure of itself (probs 1.0): a plain soft vote of the three follows it on every tie.
        answers["always"] = JudgeAnswer(label="positive", probs={"negative": 0.0, "positive": 1.0})
        recs.append(to_record(RowResult(str(i)).decided(combine_row(answers, labels, "label"), answers)))
    best = (votes[:, 0] == y).mean()
    for method in ("majority", "weighted", "dawid_skene"):
        update, report = refit(lambda: map(from_record, recs), names, labels, method, "label")
        assert update is not None and report.left_out == ("always",), method
        out = [to_record(update(i, from_record(r))) for i, r in enumerate(recs)]
        acc = np.mean([r["label"] == labels[t] for r, t in zip(out, y)])
        assert acc >= best - 0.01, (method, acc, best)


def test_dawid_skene_diagonal_prior_keeps_a_small_job_from_swapping_labels():
    # 12 items, 3 judges that mostly agree: with no prior EM may settle on any labeling; the prior keeps
    # the majority's reading and confusions near the diagonal.
    votes = np.array([[0, 0, 1], [0, 0, 0], [1, 1, 1], [1, 1, 0], [0, 1, 0], [1, 1, 1]] * 2)
    res = dawid_skene(votes, 2, diag_prior=2.0)
    assert (res.labels == majority(votes, 2).argmax(axis=1)).all()
    assert (np.diagonal(res.confusions, axis1=1, axis2=2) > 0.6).all()


def test_a_candidate_set_of_two_is_not_certainty():
    from llmlabel.ensemble.combine import judge_distribution

    assert judge_distribution(JudgeAnswer(label="a", candidates=["a", "b"])) == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert judge_distribution(JudgeAnswer(label="a", candidates=["a"])) == {"a": 1.0}
    out = combine_row({"j": JudgeAnswer(label="a", candidates=["b", "a"])}, ["a", "b", "c"], "candidates")
    assert out.label == "a" and out.confidence == pytest.approx(0.6667, abs=1e-4)


def test_gold_rows_calibrate_confidence():
    from llmlabel.ensemble.calibration import calibrate_confidence

    rng = np.random.default_rng(0)
    # An over-confident judge: says 0.95-1.0 but is right 70% of the time.
    conf = rng.uniform(0.95, 1.0, 400)
    ok = rng.random(400) < 0.7
    cal = calibrate_confidence(conf.tolist(), ok.tolist())
    assert cal is not None and abs(np.mean([cal(c) for c in conf]) - 0.7) < 0.03
    assert calibrate_confidence([0.9] * 10, [True] * 5 + [False] * 5) is None  # too few gold rows
    # Through refit: one over-confident judge, 100 gold rows -> confidences near its gold accuracy.
    labels = ["negative", "positive"]
    y = rng.integers(0, 2, 300)
    said = np.where(rng.random(300) < 0.7, y, 1 - y)
    recs = [
        {"id": str(i), "label": labels[s], "confidence": 1.0, "judges": {"j": {"label": labels[s]}}}
        for i, s in enumerate(said)
    ]
    gold = {str(i): labels[y[i]] for i in range(100)}
    update, report = refit(lambda: map(from_record, recs), ["j"], labels, "majority", "label", gold)
    assert update is not None and report.confidence_calibrated_on == 100
    confs = [update(i, from_record(r)).confidence for i, r in enumerate(recs)]
    assert abs(np.mean(confs) - (said == y)[:100].mean()) < 0.02


def test_a_judge_skewed_to_one_label_is_left_out_even_above_chance_kappa():
    # Measured on 20 SST-2 rows: Qwen 0.90 (11 positive), SmolLM2 0.60 (9), Gemma 0.55 (2 positive); the two
    # weak judges agree on negatives often enough for kappa ~0.24, but Gemma's shares are 0.4 away from theirs.
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    good = np.where(rng.random(200) < 0.9, y, 1 - y)
    weak = np.where(rng.random(200) < 0.6, y, 1 - y)
    skewed = np.where(rng.random(200) < 0.8, 0, y)  # "negative" unless the truth is positive and a coin says so
    votes = np.stack([good, weak, skewed], axis=1)
    assert judge_kappas(votes, 2)[2] > 0.1  # kappa alone would keep it
    assert uninformative(votes, 2).tolist() == [False, False, True]


def test_when_every_judge_looks_uninformative_the_varied_one_stays():
    # Measured on 20 TREC rows: SmolLM2 and Gemma answered one label each, so every pair's kappa is 0;
    # the judge with real answers (Qwen, 0.45) must be the one kept, not a constant one.
    rng = np.random.default_rng(0)
    varied = rng.integers(0, 6, 40)
    votes = np.stack([np.full(40, 2), varied, np.full(40, 0)], axis=1)
    assert uninformative(votes, 6).tolist() == [True, False, True]


def test_uninformative_two_judges_stuck_on_one_label_do_not_outvote_the_reader():
    """TREC with tiny models: two judges answer the first code to most questions and agree with each other
    (kappa above chance), the third reads the text; on 3+ labels the concentrated pair is left out."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 60)
    reader = np.where(rng.random(60) < 0.5, y, rng.integers(0, 6, 60))
    stuck = [np.where(rng.random(60) < p, 0, rng.integers(0, 6, 60)) for p in (0.85, 0.9)]
    assert uninformative(np.column_stack([reader, *stuck]), 6).tolist() == [False, True, True]
    # Two labels: a judge answering one label to 90% of an imbalanced task is not flagged for that alone.
    ham = np.where(rng.random(60) < 0.9, 0, 1)
    assert not uninformative(np.column_stack([ham, ham, rng.integers(0, 2, 60)]), 2)[:2].any()


def test_refit_with_gold_puts_the_label_prior_back_into_calibrated_distributions():
    """Content-free calibration assumes balanced labels: a judge leaning 0.6 "spam" on every row of a
    90% ham job is right 10% of the time. With gold rows the combined label uses the gold label shares."""
    labels = ["ham", "spam"]
    recs = [
        {
            "id": str(i),
            "label": "spam",
            "confidence": 0.6,
            "judges": {"q": {"label": "spam", "probs": {"ham": 0.4, "spam": 0.6}}},
        }
        for i in range(40)
    ]
    recs[0]["judges"]["q"] = {"label": "spam", "probs": {"ham": 0.02, "spam": 0.98}}
    gold = {str(i): "ham" for i in range(1, 20)} | {"0": "spam"}
    update, _ = refit(lambda: map(from_record, recs), ["q"], labels, "majority", "label", gold=gold)
    out = [to_record(update(i, from_record(r))) for i, r in enumerate(recs)]
    assert [r["label"] for r in out[1:]] == ["ham"] * 39 and out[0]["label"] == "spam"
    assert out[5]["judges"]["q"]["label"] == "spam"  # the judge's own answer is kept as it was
    assert refit(lambda: map(from_record, recs), ["q"], labels, "majority", "label")[0] is None  # no gold: unchanged


def test_combine_row_ties_within_1e9_go_to_the_lead_judge_then_the_first_label():
    labels = ["a", "b", "c"]

    def row(pa: float, pb: float, lead: str) -> str:
        answers = {
            "first": JudgeAnswer(label=lead, probs={"a": pa, "b": pb, "c": 0.0}),
            "second": JudgeAnswer(label="c", probs={"a": 0.0, "b": 0.0, "c": 1.0}),
        }
        return combine_row(answers, labels, "label", {"first": 1.0, "second": 0.0}).label

    assert row(0.5, 0.5 + 4e-10, "a") == "a"  # a tie at 1e-9: the lead judge's label
    assert row(0.5 + 4e-10, 0.5, "b") == "b"
    assert row(0.5, 0.5 + 3e-9, "a") == "b"  # more than 1e-9 apart: the higher mass
    assert row(0.5, 0.5, "c") == "a"  # a tie the lead is not in: the first listed label


def test_rows_only_a_left_out_judge_answered_are_counted():
    # A cascade that put a constant, sure judge first stopped on it for some rows: those rows have no
    # informative answer, and the summary says how many (the run turns it into a warning).
    labels = ["negative", "positive"]
    y, votes = _binary_judges()
    names = ["good", "fair", "always"]
    recs = []
    for i, v in enumerate(votes):
        answers = {"always": JudgeAnswer(label="positive", probs={"negative": 0.0, "positive": 1.0})}
        if i % 4:  # every fourth row: the cascade stopped after the first judge
            answers |= {n: JudgeAnswer(label=labels[v[j]]) for j, n in enumerate(names[:2])}
        recs.append(to_record(RowResult(str(i)).decided(combine_row(answers, labels, "label"), answers)))
    for method in ("majority", "weighted", "dawid_skene"):
        _, report = refit(lambda: map(from_record, recs), names, labels, method, "label")
        assert report.left_out == ("always",), method
        assert report.rows_only_left_out == len(recs[::4]), method
    full = [r for i, r in enumerate(recs) if i % 4]
    assert not refit(lambda: map(from_record, full), names, labels, "majority", "label")[1].rows_only_left_out
