"""A per-label judge's pieces: its question's prompt and kind, its Yes/No answers read into P(Yes), and their
combination into the judge's one answer for the row (combine_fits)."""

from __future__ import annotations

import pytest

from llmlabel.config import Task
from llmlabel.ensemble.combine import combine_fits, combine_row
from llmlabel.llm.answers import JudgeAnswer
from llmlabel.llm.prompts import Prompts, fits_kind, fits_label, prompt_name

LABELS = ["World", "Sports", "Sci/Tech"]


def _yes(p: float | None, label: str = "Yes") -> JudgeAnswer:
    return JudgeAnswer(label=label, probs=None if p is None else {"Yes": p, "No": 1 - p})


def test_probs_are_each_labels_odds_normalized_and_the_label_their_argmax():
    got = combine_fits([_yes(0.6), _yes(0.2, "No"), _yes(0.7)], LABELS)
    assert got.label == "Sci/Tech" and got.error is None
    odds = {"World": 0.6 / 0.4, "Sports": 0.2 / 0.8, "Sci/Tech": 0.7 / 0.3}
    assert got.probs == pytest.approx({k: v / sum(odds.values()) for k, v in odds.items()})
    # A sure Yes (no "No" among the top tokens) has large odds, not infinite ones.
    assert combine_fits([_yes(1.0), _yes(1.0), _yes(0.5)], LABELS).probs == pytest.approx(
        {"World": 0.5, "Sports": 0.5, "Sci/Tech": 0.0}, abs=1e-5
    )
    # "No" to every label still ranks them by P(Yes): the label is the likeliest, its confidence modest.
    got = combine_fits([_yes(0.1, "No"), _yes(0.3, "No"), _yes(0.1, "No")], LABELS)
    sports = (0.3 / 0.7) / (0.3 / 0.7 + 2 * 0.1 / 0.9)
    assert got.label == "Sports" and combine_row({"j": got}, LABELS, "label").confidence == round(sports, 4)


def test_ties_go_to_the_task_order_and_answers_without_logprobs_count_their_word():
    assert combine_fits([_yes(0.5), _yes(0.5), _yes(0.1)], LABELS).label == "World"
    got = combine_fits([_yes(None, "No"), _yes(None, "Yes"), _yes(None, "No")], LABELS)
    assert got.label == "Sports" and got.probs == {"World": 0.0, "Sports": 1.0, "Sci/Tech": 0.0}


def test_a_failed_question_or_no_to_every_label_without_logprobs_is_an_error():
    failed = combine_fits([_yes(0.9), JudgeAnswer(error="invalid answer: 'Maybe'"), _yes(0.1)], LABELS)
    assert failed.label is None and failed.error == "invalid answer: 'Maybe'"
    none = combine_fits([_yes(None, "No")] * 3, LABELS)
    assert none.label is None and none.error == "the judge answered No to every label"


def test_the_kind_carries_the_label_and_the_prompt_puts_it_after_the_text():
    kind = fits_kind("Sci/Tech")
    assert fits_label(kind) == "Sci/Tech" and fits_label("label") is None and fits_label("fits") is None
    assert prompt_name(kind) == "fits"
    task = Task(name="news", instructions="Which topic?", labels={"World": "", "Sports": "", "Sci/Tech": "computers"})
    prompts = Prompts(task, None)
    a = prompts.messages(None, kind, "Chips get faster")
    b = prompts.messages(None, fits_kind("World"), "Chips get faster")
    assert a[0] == b[0] and len(a) == 2  # one system message for every label: a server reuses it
    assert a[1]["content"].startswith("<text>\nChips get faster\n</text>")
    assert a[1]["content"].endswith("Label: Sci/Tech: computers\nDoes this label fit the text? Answer Yes or No.")
    assert b[1]["content"].endswith("Label: World\nDoes this label fit the text? Answer Yes or No.")


def test_the_embedded_models_ask_per_label_for_3_to_5_labels_where_the_job_allows_it():
    from llmlabel.config import Config
    from llmlabel.pipeline.lifecycle import local_judges, per_label_fits

    big = {"name": "qwen1.5b", "model": "qwen2.5-coder-1.5b", "base_url": "http://127.0.0.1:9/v1"}
    small = {"name": "qwen", "model": "qwen2.5-coder-0.5b", "base_url": "http://127.0.0.1:9/v1"}
    for m in (big, small):
        assert [local_judges([m], n, True)[0].per_label for n in (2, 3, 5, 6)] == [False, True, True, False]
        assert not local_judges([m], 4)[0].per_label  # the job does not allow it
    # ...and only for a model it was measured with
    tiny = {"name": "smollm2", "model": "smollm2-135m", "base_url": "http://127.0.0.1:9/v1"}
    assert not local_judges([tiny], 4, True)[0].per_label
    # Together, each asks per label; in a cascade only the last (the others' confidence decides what goes on).
    assert [j.per_label for j in local_judges([small, big], 4, True)] == [True, True]
    assert [j.per_label for j in local_judges([small, big], 4, True, cascade=True)] == [False, True]
    task = {"name": "t", "instructions": "i", "labels": ["a", "b", "c"]}
    assert per_label_fits(Config.model_validate({"task": task}))
    for other in (
        {"task": {**task, "multi_label": True}},
        {"task": {**task, "examples": [{"text": "x", "label": "a"}]}},
        {"task": {**task, "shortlist": 2}},
        {"task": task, "mode": "candidates"},
    ):
        assert not per_label_fits(Config.model_validate(other))


def test_a_jobs_embedded_judges_ask_per_label_but_a_cascades_first_does_not(monkeypatch):
    import contextlib

    from llmlabel.config import Config
    from llmlabel.local import servers
    from llmlabel.pipeline.lifecycle import judges_for

    url = "http://127.0.0.1:9/v1"
    dicts = [{"name": "qwen", "model": "qwen2.5-coder-0.5b", "base_url": url}]
    dicts.append({"name": "qwen1.5b", "model": "qwen2.5-coder-1.5b", "base_url": url})
    monkeypatch.setattr(servers, "local_judges", lambda: contextlib.nullcontext(dicts))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    task = {"name": "t", "instructions": "i", "labels": ["a", "b", "c", "d"]}
    with judges_for(Config.model_validate({"task": task})) as judges:
        assert [j.per_label for j in judges] == [True, True]
    with judges_for(Config.model_validate({"task": task, "cascade": {"threshold": 0.8}})) as judges:
        assert [j.per_label for j in judges] == [False, True]
