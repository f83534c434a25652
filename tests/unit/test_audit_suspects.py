"""An audit's row is a typed `Suspect`; `io.records.suspect_record` alone makes it the output record, whose field
order is part of the format (the JSON lines of `llmlabel audit`, `AuditReport.records`)."""

from llmlabel.auditing.api import AuditReport
from llmlabel.io.records import suspect_record
from llmlabel.results import Suspect

ONE = Suspect("r1", "great", "neg", "pos", 0.1, True, 0.2, 1, True, None, None, None, {"pos": 0.9}, {"a": {}})
SETS = Suspect(
    "r2", "both", "a|b", "a", 0.3, True, 0.4, 2, False, 0.5, 1, True, {"a": 0.9, "b": 0.2}, {}, "timeout",
    given_labels=["a", "b"], suggested_labels=["a"], missing={}, extra={"b": 0.8}, judge_suspects=[],
    cleanlab_suspects=["b"],
)  # fmt: skip


def test_a_single_label_record_keeps_its_fields_and_order():
    rec = suspect_record(ONE)
    assert list(rec) == [
        "id", "text", "given_label", "suggested_label", "score", "flagged", "judge_score", "judge_rank",
        "judge_flagged", "cleanlab_score", "cleanlab_rank", "cleanlab_issue", "probs", "judges",
    ]  # fmt: skip
    assert rec["score"] == 0.1 and rec["cleanlab_score"] is None and "error" not in rec and not ONE.multi_label


def test_a_multi_label_record_adds_the_sets_in_place_and_the_error_last():
    rec = suspect_record(SETS)
    assert list(rec) == [
        "id", "text", "given_label", "suggested_label", "given_labels", "suggested_labels", "score", "flagged",
        "missing", "extra", "judge_score", "judge_rank", "judge_flagged", "judge_suspects", "cleanlab_score",
        "cleanlab_rank", "cleanlab_issue", "cleanlab_suspects", "probs", "judges", "error",
    ]  # fmt: skip
    assert rec["extra"] == {"b": 0.8} and rec["error"] == "timeout" and SETS.multi_label


def test_the_report_gives_records_as_the_command_writes_them():
    report = AuditReport([ONE, SETS], {}, ["r2", "r1"])
    assert report.records == [suspect_record(ONE), suspect_record(SETS)]
    assert report.flagged == report.records and report.scores == {"r1": 0.1, "r2": 0.3}
    assert [r["id"] for r in report.in_input_order()] == ["r2", "r1"]
