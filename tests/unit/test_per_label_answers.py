"""A per-label judge's pieces: its question's prompt and kind, its Yes/No answers read into P(Yes), and their
combination into the judge's one answer for the row (combine_fits)."""

from __future__ import annotations

from llmlabel.config import Task
from llmlabel.ensemble.combine import combine_fits, combine_row
from llmlabel.llm.answers import JudgeAnswer
from llmlabel.llm.prompts import Prompts, fits_kind, fits_label, prompt_name

LABELS = ["World", "Sports", "Sci/Tech"]


def _yes(p: float | None, label: str = "Yes") -> JudgeAnswer:
    return JudgeAnswer(label=label, probs=None if p is None else {"Yes": p, "No": 1 - p})


def test_probs_are_each_labels_p_yes_normalized_and_the_label_their_argmax():
    got = combine_fits([_yes(0.6), _yes(0.2, "No"), _yes(0.7)], LABELS)
    assert got.label == "Sci/Tech" and got.error is None
    assert got.probs == {"World": 0.6 / 1.5, "Sports": 0.2 / 1.5, "Sci/Tech": 0.7 / 1.5}
    # "No" to every label still ranks them by P(Yes): the label is the likeliest, its confidence modest.
    got = combine_fits([_yes(0.1, "No"), _yes(0.3, "No"), _yes(0.1, "No")], LABELS)
    assert got.label == "Sports" and combine_row({"j": got}, LABELS, "label").confidence == 0.6


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

