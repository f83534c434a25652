"""The audit's Label Studio export: the project's control, object and text field (named by flags or read from
its labeling config), the choices' spelling, and the given label beside the suggestion."""

import json

from conftest import one_line_error, run_main, write_config

from llmlabel.auditing.exports import LSTarget, export_labelstudio, labelstudio_config
from llmlabel.io.labelstudio import parse_config
from llmlabel.results import Suspect

LABELS = ["positive", "negative"]
CONFIG = """<View>
  <Text name="review" value="$body"/>
  <Choices name="topic" toName="review"><Choice value="news"/><Choice value="sport"/></Choices>
  <Choices name="sentiment" toName="review" choice="single"><Choice value="Positive"/><Choice value="Negative"/></Choices>
</View>"""


def _suspect(rid: str, text: str, given: str, suggested: str, score: float, flagged: bool) -> Suspect:
    return Suspect(
        rid, text, given, suggested, score, flagged, score, 1, flagged, None, None, None, {}, {}
    )  # fmt: skip


RECORDS = [
    _suspect("a", "good", "negative", "positive", 0.1, True),
    _suspect("b", "bad", "negative", "negative", 0.9, False),
]


def test_export_into_a_projects_own_names(tmp_path):
    target = LSTarget.from_config(CONFIG, LABELS)
    assert target == LSTarget("sentiment", "review", "body", {"positive": "Positive", "negative": "Negative"})
    assert export_labelstudio(tmp_path / "ls.json", RECORDS, target) == 1
    (task,) = json.loads((tmp_path / "ls.json").read_text())
    assert task["data"]["body"] == "good" and "text" not in task["data"]
    assert task["data"]["given_label"] == "negative" and task["data"]["suggested_label"] == "Positive"
    (res,) = task["predictions"][0]["result"]
    assert (res["from_name"], res["to_name"], res["value"]["choices"]) == ("sentiment", "review", ["Positive"])
    assert task["predictions"][0]["score"] == 0.9


def test_the_written_config_shows_given_and_suggested(tmp_path):
    target = LSTarget(from_name="lab", to_name="doc", text_key="content")
    labelstudio_config(tmp_path / "c.xml", LABELS, target)
    xml = (tmp_path / "c.xml").read_text()
    assert parse_config(xml, LABELS).text_key == "content"
    assert "Given label: $given_label" in xml and "Model suggests: $suggested_label" in xml


def test_audit_flags_are_checked_before_the_judges_are_paid(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9")  # nothing listens there: never reached
    inp = tmp_path / "in.csv"
    inp.write_text("id,text,label\n1,x,positive\n2,y,negative\n")
    (tmp_path / "ner.xml").write_text('<View><Text name="t" value="$text"/><Labels name="n" toName="t"/></View>')
    base = ["audit", str(inp), "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"), "-q"]
    ls = ["--export-labelstudio", str(tmp_path / "ls.json")]
    rc, _, err = run_main(capsys, *base, *ls, "--ls-config", str(tmp_path / "ner.xml"))
    one_line_error(rc, err, "(span/NER) control")
    rc, _, err = run_main(capsys, *base, *ls, "--ls-config", str(tmp_path / "ner.xml"), "--ls-from-name", "x")
    one_line_error(rc, err, "drop --ls-from-name")
    (tmp_path / "pn.xml").write_text(CONFIG.replace("Positive", "pos"))
    rc, _, err = run_main(capsys, *base, *ls, "--ls-config", str(tmp_path / "pn.xml"))
    one_line_error(rc, err, "2 <Choices>", "none whose choices are the task's labels")
    assert not (tmp_path / "o.jsonl").exists()
