"""The audit's scores: which given labels are most likely wrong.

Two signals, combined into one posterior per row:

* the judges: Dawid-Skene over the judges' votes *and the given label*, treated as one more annotator.
  Its confusion matrices give each judge's reliability and the given labels' own noise model (per-class
  flip rates), and the posterior P(true = given | votes, given) is the judges' label-quality score. With a
  single judge on 3+ labels that model is not identified; the given labels then get one flip rate
  (``flip_rate_em``), learned together with the classifier's evidence;
* confident learning: a classifier on the distillation features, trained on the given labels, gives
  out-of-fold probabilities; cleanlab scores them (``get_label_quality_scores``, ``find_label_issues``).

``score`` = P(true = given) under a product of experts: the DS posterior times the classifier's
likelihood ratio p(k | text) / prior(k), raised to ``classifier_weight`` and renormalized. The classifier's
out-of-fold probabilities are temperature-scaled first (``temper``, fitted on the given labels, never
sharpened): a logistic regression at C=10 on a few hundred rows is overconfident, and its raw ratios made
the flags' expected precision a promise the flags did not keep (SST-2 with 10% flipped labels and the
embedded judge: estimated 0.81, true 0.42). With the self-confidence method, cleanlab's quality score of
the given label is exactly the raw p(given | text).
Rows are flagged from the most suspicious down while the expected precision of the flagged set (the mean
of 1 - score, i.e. Bayesian FDR control) stays >= ``min_precision`` and each flagged row is more likely
wrong than right.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmlabel.results import Suspect

PROB_FLOOR = 1e-4  # the classifier alone can never rule a class out: it is trained on noisy labels


@dataclass
class Signals:
    """Per-row arrays from the two signals and their combination; (n, K) arrays are over task.labels."""

    judge_post: np.ndarray
    judge_score: np.ndarray
    post: np.ndarray
    score: np.ndarray
    judge_accuracy: np.ndarray  # per judge, then the given labels as the last entry
    given_confusion: np.ndarray  # (K, K) P(given = l | true = k), from Dawid-Skene
    clf_probs: np.ndarray | None = None
    cleanlab_score: np.ndarray | None = None
    cleanlab_issue: np.ndarray | None = None
    classifier_note: str | None = None


def _classifier_probs(
    texts: Sequence[str], given: np.ndarray, K: int, features: str, folds: int, seed: int
) -> tuple[np.ndarray | None, np.ndarray, str | None]:
    """Out-of-fold class probabilities (n, K) of a TF-IDF logistic regression, or None with the reason."""
    present, counts = np.unique(given, return_counts=True)
    if len(present) < 2:
        return None, present, "the given labels use a single class"
    k = int(min(folds, counts.min()))
    if k < 2 or len(given) < 10:
        return (
            None,
            present,
            f"too few rows per class for {folds}-fold cross-validation (smallest class: {counts.min()})",
        )
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    pp = out_of_fold(
        texts, given, LogisticRegression(C=10.0, max_iter=1000), StratifiedKFold(k, shuffle=True, random_state=seed),
        features,
    )  # fmt: skip
    full = np.zeros((len(given), K))
    full[:, present] = pp
    return full, present, None


def out_of_fold(texts: Sequence[str], y: np.ndarray, estimator: Any, cv: Any, features: str) -> np.ndarray:
    """Out-of-fold predict_proba of `estimator` on the distillation features of `texts`, trained on `y` (class
    codes, or an (n, K) indicator matrix for a one-vs-rest estimator): the probabilities cleanlab scores."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    from llmlabel.distill.features import make_featurizer

    # The featurizer sits inside the pipeline so each fold fits its own vocabulary: no leak from held-out rows.
    pipe = make_pipeline(make_featurizer(features), estimator)
    # One BLAS thread: lbfgs on sparse TF-IDF is several times slower with oversubscribed BLAS threads.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # one-vs-rest: a label absent from a training fold
        return np.asarray(cross_val_predict(pipe, list(texts), y, method="predict_proba", cv=cv), dtype=float)


def temper(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
    """probs (n, K) softened by the temperature T >= 1 that maximizes the likelihood of the given labels.

    The labels are noisy, so a fit against them can only err towards softer probabilities (T is never below 1):
    an uninformative classifier ends near uniform and leaves the judges' posterior alone."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.maximum(probs, PROB_FLOOR))
    rows = np.arange(len(given))

    def soft(log_t: float) -> np.ndarray:
        z = logp / np.exp(log_t)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def nll(log_t: float) -> float:
        return float(-np.log(soft(log_t)[rows, given]).mean())

    best = minimize_scalar(nll, bounds=(0.0, np.log(1000.0)), method="bounded", options={"xatol": 1e-3})
    return soft(float(best.x))


def flip_rate_em(
    vote: np.ndarray, given: np.ndarray, K: int, log_ratio: np.ndarray | None = None, iters: int = 300
) -> tuple[np.ndarray, float, float]:
    """Posteriors (n, K) of the true label from one judge's votes (-1: none) and the given labels, the given
    labels' flip rate and the judge's accuracy, by EM.

    The judge gets a full confusion matrix, the given labels one flip rate (a wrong label is any other label
    alike): with one judge, Dawid-Skene's two full confusion matrices are not identified, and on TREC it put
    the judge's own confusions (ENTY for DESC) on the given labels. With `log_ratio` (the classifier's log
    likelihood ratios) in every E-step, the flip rate is learned with the text's evidence too."""
    n = len(given)
    rows = np.arange(n)
    has = vote >= 0
    post = np.zeros((n, K))
    post[rows, given] += 1.0
    post[rows[has], vote[has]] += 1.0
    post /= post.sum(axis=1, keepdims=True)
    eps, acc = 0.0, 0.0
    for _ in range(iters):
        prior = (post.sum(axis=0) + 0.01) / (n + 0.01 * K)
        eps = float(np.clip(1.0 - post[rows, given].mean(), 1e-4, 0.5))
        conf = np.full((K, K), 0.01)
        np.add.at(conf.T, vote[has], post[has])  # conf[k, l] += P(true = k) for each vote l
        conf /= conf.sum(axis=1, keepdims=True)
        acc = float(prior @ np.diag(conf))
        logp = np.tile(np.log(prior), (n, 1))
        logp[has] += np.log(conf[:, vote[has]].T)
        flips = np.full((n, K), np.log(eps / (K - 1)))
        flips[rows, given] = np.log(1.0 - eps)
        logp += flips if log_ratio is None else flips + log_ratio
        new = np.exp(logp - logp.max(axis=1, keepdims=True))
        new /= new.sum(axis=1, keepdims=True)
        done = np.abs(new - post).max() < 1e-7
        post = new
        if done:
            break
    return post, eps, acc


def _flip_confusion(eps: float, K: int) -> np.ndarray:
    return np.full((K, K), eps / (K - 1)) + (1.0 - eps - eps / (K - 1)) * np.eye(K)


def score_signals(
    votes: np.ndarray,
    given: np.ndarray,
    K: int,
    texts: Sequence[str] | None = None,
    features: str = "tfidf",
    folds: int = 5,
    classifier_weight: float = 1.0,
    seed: int = 0,
) -> Signals:
    """Both signals and their combination. votes: (n, J) class codes (-1 = no answer); given: (n,) codes."""
    from llmlabel.ensemble.aggregate import dawid_skene

    n = len(given)
    rows = np.arange(n)
    votes = np.asarray(votes, dtype=np.int64).reshape(n, -1)
    # One judge on 3+ labels: a flip rate for the given labels (flip_rate_em); with two labels neither model
    # is identified, and Dawid-Skene's symmetric answer (0.5 where judge and label disagree) flags nothing
    # by itself, which is the honest outcome there.
    one_judge = votes.shape[1] == 1 and K >= 3
    if one_judge:
        jpost, eps, acc = flip_rate_em(votes[:, 0], given, K)
        accuracy, given_confusion = np.array([acc, 1.0 - eps]), _flip_confusion(eps, K)
    else:
        # The given label is one more annotator: DS then learns how noisy the given labels are, per class.
        ds = dawid_skene(np.column_stack([votes, given]), K)
        jpost, accuracy, given_confusion = ds.posteriors, ds.accuracies, ds.confusions[-1]
    sig = Signals(
        judge_post=jpost,
        judge_score=jpost[rows, given],
        post=jpost,
        score=jpost[rows, given],
        judge_accuracy=accuracy,
        given_confusion=given_confusion,
    )
    if texts is None:
        sig.classifier_note = "disabled"
        return sig
    pp, present, note = _classifier_probs(texts, given, K, features, folds, seed)
    if pp is None:
        sig.classifier_note = note
        return sig
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    # cleanlab works on the classes that occur; codes are remapped to 0..len(present)-1.
    remap = np.full(K, -1)
    remap[present] = np.arange(len(present))
    compact = pp[:, present]
    compact = compact / compact.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sig.cleanlab_score = np.asarray(get_label_quality_scores(remap[given], compact), dtype=float)
        # n_jobs=1: cleanlab's default forks a process pool, which can deadlock a threaded process (the server)
        sig.cleanlab_issue = np.asarray(find_label_issues(remap[given], compact, n_jobs=1), dtype=bool)
    sig.clf_probs = pp
    prior = np.bincount(given, minlength=K) / n
    ratio = np.ones((n, K))
    ratio[:, present] = np.maximum(temper(compact, remap[given]), PROB_FLOOR) / prior[present]
    log_ratio = classifier_weight * np.log(ratio)
    if one_judge:
        post, eps, acc = flip_rate_em(votes[:, 0], given, K, log_ratio)
        sig.judge_accuracy, sig.given_confusion = np.array([acc, 1.0 - eps]), _flip_confusion(eps, K)
    else:
        logp = np.log(np.maximum(jpost, 1e-300)) + log_ratio
        post = np.exp(logp - logp.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
    sig.post = post
    sig.score = sig.post[rows, given]
    return sig


def choose_flags(p_wrong_desc: np.ndarray, min_precision: float) -> tuple[int, float]:
    """How many of the rows (sorted by P(mislabeled), descending) to flag, and the set's expected precision.

    The largest prefix whose mean P(mislabeled) is >= min_precision, and no row in it more likely right
    than wrong (flagging near-certainly correct rows just to spend the precision budget helps nobody)."""
    p = np.asarray(p_wrong_desc, dtype=float)
    if not len(p):
        return 0, float("nan")
    prec = np.cumsum(p) / np.arange(1, len(p) + 1)
    ok = (prec >= min_precision - 1e-12) & (p >= 0.5)
    m = int(np.flatnonzero(ok).max()) + 1 if ok.any() else 0
    return m, float(prec[m - 1]) if m else float("nan")


def ranks(score: np.ndarray) -> np.ndarray:
    """1 = most suspicious (lowest score); ties keep input order."""
    r = np.empty(len(score), dtype=np.int64)
    r[np.argsort(score, kind="stable")] = np.arange(1, len(score) + 1)
    return r


def flags_for(score: np.ndarray, min_precision: float) -> tuple[np.ndarray, int, float]:
    order = np.argsort(score, kind="stable")
    m, prec = choose_flags(1.0 - score[order], min_precision)
    flag = np.zeros(len(score), dtype=bool)
    flag[order[:m]] = True
    return flag, m, prec


def auroc(score_of_positive: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `score_of_positive` for the boolean `positive` (ties count half)."""
    from scipy.stats import rankdata

    y = np.asarray(positive, dtype=bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if not npos or not nneg:
        return float("nan")
    r = rankdata(score_of_positive)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


# Each signal's score and flag fields in an audit's row (a Suspect) (the summary's gold section reads them).
SIGNAL_FIELDS = {
    "combined": ("score", "flagged"),
    "judges": ("judge_score", "judge_flagged"),
    "cleanlab": ("cleanlab_score", "cleanlab_issue"),
}


def signal_columns(rows: Sequence[Suspect]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(signal, scores, flags) of each signal the audit's rows carry."""
    for name, (sk, fk) in SIGNAL_FIELDS.items():
        if getattr(rows[0], sk) is None:
            continue
        yield (
            name,
            np.array([getattr(r, sk) for r in rows], dtype=float),
            np.array([bool(getattr(r, fk)) for r in rows]),
        )
