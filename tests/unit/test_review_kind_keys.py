"""The review loop's reading of multi-label sets and taxonomy paths (review.kinds), and the honesty of the
accuracy it states for them: over seeded reviews of synthetic outputs (rows of known truth, a model whose
confidence carries signal), the stated 95% interval covers the final output's true accuracy at about its rate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmlabel.review.dataset import load_output
from llmlabel.review.kinds import EMPTY_SET, LabelKind
from llmlabel.review.loop import Settings, simulate
from llmlabel.taxonomy import Taxonomy

LABELS = ("joy", "anger", "fear", "sadness")
TREE = Taxonomy.parse({"a": {"a1": ["x", "y"], "a2": ["z", "w"]}, "b": {"b1": ["u", "v"], "b2": ["s"]}})


def test_keys_read_what_people_write() -> None:
    m = LabelKind("multilabel", LABELS)
    assert m.parse("fear|joy") == m.parse("Joy, FEAR") == m.parse('["fear", "joy"]') == "joy|fear"
    assert m.parse("[]") == m.parse(EMPTY_SET) == EMPTY_SET and m.parse("joy|love") is None
    assert m.right("joy|fear", "joy|fear") and not m.right("joy", "joy|fear")  # the whole set, or wrong
    t = LabelKind("taxonomy", tuple(TREE.names()), TREE)
    assert t.parse("a/a1/x") == t.parse("A > A1 > X") == t.parse('["a", "a1", "x"]') == t.parse("x") == "a > a1 > x"
    assert t.parse("a > b1") is None and t.parse("nothing") is None
    # The path reached is right when it starts the true path; per level, the two must agree down to it.
    assert t.right("a > a1", "a > a1 > x") and not t.right("a > a1 > y", "a > a1 > x")
    assert t.right_at("a > a1", "a > a1 > x", 2) and not t.right_at("a > a1", "a > a1 > x", 3)
    rec: dict = {}
    t.write(rec, "b > b2 > s")
    assert rec == {"path": ["b", "b2", "s"], "depth": 3, "label": "s", "level_confidence": [1.0, 1.0, 1.0]}


def _multi_output(path: Path, n: int, rng: np.random.Generator) -> dict[str, str]:
    kind = LabelKind("multilabel", LABELS)
    truth: dict[str, str] = {}
    with open(path, "w") as fh:
        for i in range(n):
            true = {lab for lab in LABELS if rng.random() < 0.3} or {LABELS[int(rng.integers(4))]}
            probs = {}
            for lab in LABELS:
                sure = rng.random() < 0.85  # most decisions sure and right; the rest a coin near 0.5
                p = rng.beta(9, 1) if sure else rng.uniform(0.3, 0.7)
                probs[lab] = round(float(p if lab in true else 1 - p), 4)
            got = [lab for lab in LABELS if probs[lab] >= 0.5]
            conf = float(np.prod([max(p, 1 - p) for p in probs.values()]))
            rec = {"id": f"r{i}", "text": f"t{i}", "label": "|".join(got) or None, "labels": got, "probs": probs}
            rec |= {"confidence": round(conf, 4), "judges": {"a": {"labels": got}}, "error": None}
            fh.write(json.dumps(rec) + "\n")
            truth[f"r{i}"] = kind.set_key(sorted(true))
    return truth


def _tree_output(path: Path, n: int, rng: np.random.Generator) -> dict[str, str]:
    leaves = [p for p in TREE.paths() if not TREE.kids(p)]
    truth: dict[str, str] = {}
    with open(path, "w") as fh:
        for i in range(n):
            true = list(leaves[int(rng.integers(len(leaves)))])
            got: list[str] = []
            lc: list[float] = []
            for level, name in enumerate(true):
                kids = TREE.kids(tuple(got))
                c = float(rng.beta(8, 2) if level == 0 else rng.beta(5, 2))
                pick = name if rng.random() < c or len(kids) == 1 else str(rng.choice([k for k in kids if k != name]))
                if level and c < 0.5:
                    lc.append(round(c, 4))
                    break  # stops at the parent
                got.append(pick)
                lc.append(round(c, 4))
                if pick != name:
                    break  # a wrong turn: the rest of the path is wrong whatever it is
            conf = float(np.prod(lc[: len(got)]))
            rec = {"id": f"r{i}", "text": f"t{i}", "label": got[-1], "path": got, "depth": len(got)}
            rec |= {
                "level_confidence": lc,
                "confidence": round(conf, 4),
                "judges": {"a": {"label": got[-1], "path": got}},
            }
            fh.write(json.dumps({**rec, "error": None}) + "\n")
            truth[f"r{i}"] = " > ".join(true)
    return truth


@pytest.mark.slow  # ~10 s: 200 seeded reviews of two outputs
@pytest.mark.parametrize("kind", ["multilabel", "taxonomy"])
def test_the_stated_interval_covers_the_true_accuracy(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(7)
    out = tmp_path / "out.jsonl"
    if kind == "multilabel":
        truth = _multi_output(out, 300, rng)
        k = LabelKind("multilabel", LABELS)
    else:
        truth = _tree_output(out, 300, rng)
        k = LabelKind("taxonomy", tuple(TREE.names()), TREE)
    ds = load_output(out, list(k.labels), kind=k)
    covered, levels_covered, reps = 0, np.zeros(3), 100
    for seed in range(reps):
        (rep,) = simulate(ds, Settings.make(80, 50, seed=seed), lambda it: truth[it.id])
        res = rep.result
        final = [r.get("human_label") or k.model_key(r) for r in res.records]
        true_acc = np.mean([k.right(f, truth[r["id"]]) for f, r in zip(final, res.records)])
        covered += res.accuracy.low <= true_acc <= res.accuracy.high
        if kind == "taxonomy":
            at = [
                np.mean([k.right_at(f, truth[r["id"]], lv + 1) for f, r in zip(final, res.records)]) for lv in range(3)
            ]
            levels_covered += [iv.low <= a <= iv.high for iv, a in zip(res.per_level, at)]
        else:
            assert set(res.label_scores) == set(LABELS)
    assert 0.9 <= covered / reps <= 1.0, covered
    if kind == "taxonomy":
        assert all(0.9 <= c / reps <= 1.0 for c in levels_covered), levels_covered  # each level's interval


def test_label_studio_training_reads_sets_and_paths() -> None:
    """The serve backend's refit counts a prediction right by its annotation: a set in any order, a path that
    stopped at the annotated path's parent (what the path's score is the chance of)."""
    from llmlabel.service.gold import _right

    assert _right("Neutral|Positive", "positive|neutral") and not _right("Neutral", "Positive|Neutral")
    assert _right("Travel > Flights > Book", "travel > flights") and not _right("Travel > Hotels", "travel > flights")
    assert _right("positive", "Positive") and not _right("positive", "negative")


def test_activelab_is_refused_in_one_line_for_sets(tmp_path: Path) -> None:
    from llmlabel.errors import InputError

    out = tmp_path / "out.jsonl"
    truth = _multi_output(out, 40, np.random.default_rng(0))
    k = LabelKind("multilabel", LABELS)
    ds = load_output(out, list(k.labels), kind=k)
    with pytest.raises(InputError, match="activelab ranks rows with one label each; this is a multilabel task"):
        simulate(ds, Settings.make(20, 10, strategy="activelab"), lambda it: truth[it.id])
