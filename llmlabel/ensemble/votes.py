"""A job's votes as a table of distinct vote rows with counts, and the judge check's quick answer from it.

Rows repeat a few vote combinations (three judges on six labels give at most 343), so the end-of-job check
that no judge is uninformative (ensemble.judges) can be answered from the counts in plain Python. On a warm
5,000-row rerun with majority vote that check was the only use of numpy; its import alone cost ~0.1 s of a
~0.55 s job. Plain Python here: this module imports numpy only where an array is asked for.

`VoteMatrix` is what the whole-job aggregation reads: the votes of every row, with candidate sets, label sets
and taxonomy levels as arrays."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmlabel.llm.memo import Memo
from llmlabel.results import JudgeAnswer, RowResult

# The thresholds of ensemble.judges.uninformative (which takes them from here).
MIN_KAPPA = 0.1
MIN_ROWS = 20
MAX_SKEW = 0.3
TOP, SPREAD = 0.7, 0.5  # judges._concentrated
ONE_LABEL = 0.5  # judges.one_label: a single judge that gives one label to half its answers (3+ labels)

# Statistics this close to a threshold are left to the full computation (plain Python sums in another order
# than numpy's, so the last bits may differ; never by this much).
_EPS = 1e-9
_NAN = float("nan")


class Votes:
    """Each row's label codes (one per judge, -1: none), each distinct combination stored once."""

    def __init__(self, n_judges: int) -> None:
        self.n_judges = n_judges
        self.index: dict[tuple[int, ...], int] = {}
        self.counts: list[int] = []
        self.rows = array("i")  # each row's combination, as its position in `index`

    def add(self, codes: tuple[int, ...]) -> None:
        k = self.index.get(codes)
        if k is None:
            k = self.index[codes] = len(self.counts)
            self.counts.append(0)
        self.counts[k] += 1
        self.rows.append(k)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_matrix(cls, codes: Any) -> Votes:
        """The votes of an (n, J) code array (numpy: no row-by-row add)."""
        import numpy as np

        n, J = codes.shape
        out = cls(J)
        if not n:
            return out
        table, first, inverse, counts = np.unique(
            codes, axis=0, return_index=True, return_inverse=True, return_counts=True
        )
        # Combinations in the order rows first show them, as `add` numbers them.
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        out.index = {tuple(int(x) for x in table[k]): i for i, k in enumerate(order.tolist())}
        out.counts = counts[order].tolist()
        out.rows = array("i", rank[inverse.reshape(-1)].astype(np.int32).tobytes())
        return out

    def matrix(self) -> Any:
        """(n, J) int64 numpy array of the votes."""
        import numpy as np

        table = np.array(list(self.index), dtype=np.int64).reshape(len(self.index), self.n_judges)
        return table[np.frombuffer(self.rows, dtype=np.int32)]


def none_uninformative(votes: Votes, K: int, max_work: int = 200_000) -> bool:
    """True when judges.uninformative(votes.matrix(), K) (no gold) surely flags no judge; False when it may
    flag one, or when a statistic is too close to its threshold to tell here, or when there are so many
    distinct combinations that numpy is the quicker way (the caller then runs the full computation)."""
    n, J = len(votes), votes.n_judges
    if J < 2 or n < MIN_ROWS:
        return True
    if len(votes.counts) * J * J > max_work:
        return False
    table = list(zip(votes.index, votes.counts))
    per = [[0] * K for _ in range(J)]  # each judge's label counts over its answered rows
    for codes, c in table:
        for j, lab in enumerate(codes):
            if lab >= 0:
                per[j][lab] += c
    answered = [max(sum(p), 1) for p in per]
    if K >= 3:  # judges._concentrated
        share = [max(p) / a for p, a in zip(per, answered)]
        if min(share) <= SPREAD + _EPS and max(share) >= TOP - _EPS:
            return False
    best = [-float("inf")] * J  # judges.judge_kappas: each judge's highest kappa with another
    for j in range(J):
        for k in range(j + 1, J):
            kappa = _pair_kappa(table, j, k, K)
            if kappa is None:
                return False
            best[j], best[k] = max(best[j], kappa), max(best[k], kappa)
    if min(best) < MIN_KAPPA + _EPS:
        return False
    if J >= 3:  # judges._label_skew: total variation from the other judges' mean shares
        shares = [[x / a for x in p] for p, a in zip(per, answered)]
        total = [sum(col) for col in zip(*shares)]
        for s in shares:
            if 0.5 * sum(abs(x - (t - x) / (J - 1)) for x, t in zip(s, total)) >= MAX_SKEW - _EPS:
                return False
    return True


def _pair_kappa(table: list[tuple[tuple[int, ...], int]], j: int, k: int, K: int) -> float | None:
    """Cohen's kappa of judges j and k over the rows both answered (judges._kappa), from exact integer
    counts; None when chance agreement is near 1 (two near-constant judges), where numpy's rounding is
    magnified too much to match its verdict here."""
    a, b = [0] * K, [0] * K
    agree = m = 0
    for codes, c in table:
        x, y = codes[j], codes[k]
        if x >= 0 and y >= 0:
            a[x] += c
            b[y] += c
            m += c
            if x == y:
                agree += c
    if not m:
        return 0.0
    chance = sum(p * q for p, q in zip(a, b))  # pe = chance / m**2
    if (m * m - chance) * 1000 <= m * m:
        return None
    return (agree * m - chance) / (m * m - chance)


@dataclass
class VoteMatrix:
    """The judges' answers over a job's rows as arrays: what the whole-job aggregation reads.

    `table` holds each row's label codes (one per judge, -1: no label) as distinct combinations with counts
    (plain Python, so that the quick judge check needs no numpy); `codes` is the same as an (n, J) int64 array.
    A candidate job adds `candidates` (n, J, K) bool: label k in judge j's set; a multi-label job adds `sets`
    (n, J, K) int8: 1 the judge named label k, 0 it did not, -1 no valid answer from it; a taxonomy job adds
    `levels`: one (n, J) code matrix per level of the tree (-1: the judge did not answer that level). `dists`, when
    asked for some judges (Batch Calibration), is (n, B, K) float64: each of those judges' label distribution
    in label order (NaN: no distribution from it on that row). Codes index `labels`. `gold` maps a row's position to its gold label's code, `gold_sets` to its gold label set."""

    labels: tuple[str, ...]
    judges: tuple[str, ...]
    table: Votes
    candidates: Any = None
    sets: Any = None
    levels: tuple[Any, ...] = ()
    dists: Any = None
    gold: dict[int, int] = field(default_factory=dict)
    gold_sets: dict[int, frozenset[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def codes(self) -> Any:
        """(n, J) int64 numpy array of the label codes."""
        return self.table.matrix()

    @classmethod
    def from_results(
        cls,
        rows: Iterable[RowResult],
        judges: list[str] | tuple[str, ...],
        labels: list[str] | tuple[str, ...],
        mode: str = "label",
        gold: Mapping[str, str] | None = None,
        dists: Sequence[str] = (),
    ) -> VoteMatrix:
        """The votes of `rows` (each row's judges' answers), for a job of kind `mode` ("candidates" adds
        candidate sets, "multilabel" label sets, "taxonomy" a matrix per level); `gold`: id -> gold label (a
        multi-label gold label is its set joined by "|"); `dists`: the judges whose label distributions to
        keep (VoteMatrix.dists)."""
        J, K = len(judges), len(labels)
        index: dict[Any, int] = {lab: k for k, lab in enumerate(labels)}
        table = Votes(J)
        flat = array("b")  # candidate or label sets: a byte a label, so memory stays flat for million-row jobs
        probs = array("d")  # the `dists` judges' distributions, K floats a judge a row
        paths: list[list[list[int]]] = []
        gold_pos: dict[int, int] = {}
        gold_sets: dict[int, frozenset[str]] = {}
        # Rows repeat one judges mapping per distinct answer set (PartFile.judges_only): coded once. The memo
        # holds each mapping, so no other object can take its id while the entry lives.
        seen: Memo[int, tuple[Any, tuple[int, ...], bytes, bytes]] = Memo(4096)
        n = 0
        for pos, r in enumerate(rows):
            n += 1
            js = r.judges
            hit = seen.get(id(js))
            if hit is None or hit[0] is not js:
                answers = [js.get(name) for name in judges]
                codes = tuple(-1 if a is None else index.get(a.label, -1) for a in answers)
                hit = seen.put(id(js), (js, codes, _sets(answers, labels, mode), _dists(js, dists, labels)))
            table.add(hit[1])
            flat.frombytes(hit[2])
            probs.frombytes(hit[3])
            if mode == "taxonomy":
                paths.append(
                    [[index.get(x.label, -1) for x in (a.levels or [])] if a else [] for a in map(js.get, judges)]
                )
            if gold and r.id in gold:
                g = gold[r.id]
                if mode == "multilabel":
                    # (a multi-label gold label: its set joined by "|", as ensemble.multilabel.split reads it)
                    gold_sets[pos] = frozenset(
                        map(str, g) if isinstance(g, list) else (x for x in str(g).split("|") if x)
                    )
                elif g in index:
                    gold_pos[pos] = index[g]
        out = cls(tuple(labels), tuple(judges), table, gold=gold_pos, gold_sets=gold_sets)
        if mode in ("candidates", "multilabel"):
            import numpy as np

            arr = np.frombuffer(flat, dtype=np.int8).reshape(n, J, K)
            if mode == "candidates":
                out.candidates = arr.astype(bool)
            else:
                out.sets = arr.copy()
        if mode == "taxonomy":
            out.levels = _level_codes(paths, J)
        if dists:
            import numpy as np

            out.dists = np.frombuffer(probs, dtype=np.float64).reshape(n, len(dists), K)
        return out


def _dists(js: Mapping[str, JudgeAnswer], names: Sequence[str], labels: Sequence[str]) -> bytes:
    """One row's label distributions of the judges `names` (NaN for a judge without a labeled distribution)."""
    if not names:
        return b""
    out = array("d")
    for name in names:
        a = js.get(name)
        p = a.probs if a is not None and a.label is not None else None
        out.extend([p.get(lab, 0.0) for lab in labels] if p else [_NAN] * len(labels))
    return out.tobytes()


def _sets(answers: list[JudgeAnswer | None], labels: list[str] | tuple[str, ...], mode: str) -> bytes:
    """One row's candidate sets (1/0 a label) or multi-label sets (1/0, -1 for a judge without a valid set)."""
    if mode == "candidates":
        return bytes(1 if a is not None and lab in (a.candidates or ()) else 0 for a in answers for lab in labels)
    if mode == "multilabel":
        out = array("b")
        for a in answers:
            if a is None or a.error or a.labels is None:
                out.extend([-1] * len(labels))
            else:
                named = set(a.labels)
                out.extend(1 if lab in named else 0 for lab in labels)
        return out.tobytes()
    return b""


def _level_codes(paths: list[list[list[int]]], J: int) -> tuple[Any, ...]:
    import numpy as np

    depth = max((len(p) for row in paths for p in row), default=0)
    levels = []
    for d in range(depth):
        m = np.full((len(paths), J), -1, dtype=np.int64)
        for i, row in enumerate(paths):
            for j, p in enumerate(row):
                if d < len(p):
                    m[i, j] = p[d]
        levels.append(m)
    return tuple(levels)
