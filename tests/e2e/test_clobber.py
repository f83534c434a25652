"""No command writes over a file it reads (issue 25, item 3): an output, a sidecar, a report or a model file equal
to the input, the config, its gold: file, task.examples_file or a prompt template is refused in one line, before
any paid request, and the file is left as it was."""

import csv

import pytest
from conftest import one_line_error, run_main, write_config, write_corpus


@pytest.fixture
def setup(tmp_path, fake):
    write_corpus(tmp_path / "in.csv", 10)
    (tmp_path / "gold.csv").write_text("id,label\nr0,positive\nr1,negative\n")
    (tmp_path / "examples.csv").write_text("text,label\ngreat stuff,positive\nawful stuff,negative\n")
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "label.jsonl").write_text("{}\n")  # a template file with a table's extension
    cfg = write_config(
        tmp_path / "c.yaml",
        fake.base_url,
        gold=str(tmp_path / "gold.csv"),
        prompts_dir=str(prompts),
    )
    text = cfg.read_text().replace(
        "  name: sentiment\n", f"  name: sentiment\n  examples_file: {tmp_path / 'examples.csv'}\n"
    )
    cfg.write_text(text)
    return tmp_path, cfg


def _unchanged(paths):
    return {p: p.read_bytes() for p in paths}


@pytest.mark.parametrize(
    "target, needle",
    [
        ("gold.csv", "the config's gold: file"),
        ("examples.csv", "task.examples_file"),
        ("prompts/label.jsonl", "a prompt template"),
        ("in.csv", "the input file"),
    ],
)
@pytest.mark.parametrize("command", ["label", "batch", "audit"])
def test_an_output_over_a_file_the_run_reads_is_refused(setup, fake, capsys, target, needle, command):
    tmp_path, cfg = setup
    files = [tmp_path / n for n in ("in.csv", "gold.csv", "examples.csv", "prompts/label.jsonl", "c.yaml")]
    before = _unchanged(files)
    args = [command if command != "batch" else "label", str(tmp_path / "in.csv"), "-c", str(cfg)]
    args += ["-o", str(tmp_path / target)] + (["--batch"] if command == "batch" else [])
    rc, _, err = run_main(capsys, *args)
    one_line_error(rc, err, needle, "choose another -o path")
    assert fake.requests == 0 and _unchanged(files) == before


def test_an_output_whose_sidecar_is_an_input_is_refused(setup, fake, capsys):
    """-o out.csv writes out.csv.ledger.json beside it: an input of that name would be overwritten."""
    tmp_path, cfg = setup
    (tmp_path / "in.csv").rename(tmp_path / "x.csv.part")
    rc, _, err = run_main(capsys, "label", str(tmp_path / "x.csv.part"), "-c", str(cfg), "-o", str(tmp_path / "x.csv"))
    one_line_error(rc, err, "x.csv.part", "the input file")
    (tmp_path / "x.csv.part").rename(tmp_path / "x.csv.part.json")  # the part file's fingerprint
    rc, _, err = run_main(
        capsys, "label", str(tmp_path / "x.csv.part.json"), "-c", str(cfg), "-o", str(tmp_path / "x.csv")
    )
    one_line_error(rc, err, "x.csv.part.json", "the input file")
    assert fake.requests == 0


def test_an_output_hard_linked_to_the_gold_file_is_refused(setup, fake, capsys):
    import os

    tmp_path, cfg = setup
    os.link(tmp_path / "gold.csv", tmp_path / "g2.csv")
    rc, _, err = run_main(capsys, "label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(tmp_path / "g2.csv"))
    one_line_error(rc, err, "gold: file")
    assert fake.requests == 0


def test_a_config_with_a_table_name_is_not_overwritten(tmp_path, fake, capsys):
    write_corpus(tmp_path / "in.csv", 5)
    cfg = write_config(tmp_path / "c.jsonl", fake.base_url)  # YAML is a superset of JSON; any name loads
    before = cfg.read_bytes()
    rc, _, err = run_main(capsys, "label", str(tmp_path / "in.csv"), "-c", str(cfg), "-o", str(cfg))
    one_line_error(rc, err, "the config file")
    assert fake.requests == 0 and cfg.read_bytes() == before


def test_audit_reports_and_gold_are_checked(setup, fake, capsys):
    tmp_path, cfg = setup
    with open(tmp_path / "labeled.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        w.writerows([[f"r{i}", f"text {i}", "positive"] for i in range(5)])
    (tmp_path / "g.csv").write_text("id,label\nr0,positive\n")
    base = ["audit", str(tmp_path / "labeled.csv"), "-c", str(cfg), "-o", str(tmp_path / "a.jsonl")]
    rc, _, err = run_main(capsys, *base, "--gold", str(tmp_path / "g.csv"), "--export-csv", str(tmp_path / "g.csv"))
    one_line_error(rc, err, "--gold file", "--export-csv")
    rc, _, err = run_main(capsys, *base, "--html", str(tmp_path / "a.jsonl"))  # .html check first
    assert rc != 0
    (tmp_path / "r.html").write_text("x")
    rc, _, err = run_main(capsys, *base[:-1], str(tmp_path / "g.csv"), "--gold", str(tmp_path / "g.csv"))
    one_line_error(rc, err, "--gold file")
    assert fake.requests == 0 and (tmp_path / "g.csv").read_text() == "id,label\nr0,positive\n"


def test_predict_eval_distill_and_merge_outputs_are_checked(tmp_path, capsys):
    (tmp_path / "m.skops").write_bytes(b"model")
    (tmp_path / "m.skops.card.json").write_text("{}")
    write_corpus(tmp_path / "in.csv", 3)
    (tmp_path / "gold.csv").write_text("id,label\nr0,positive\n")
    rc, _, err = run_main(
        capsys, "predict", str(tmp_path / "m.skops"), str(tmp_path / "in.csv"), "-o", str(tmp_path / "in.csv")
    )
    one_line_error(rc, err, "the input file")
    rc, _, err = run_main(
        capsys, "eval", str(tmp_path / "in.csv"), "--gold", str(tmp_path / "gold.csv"), "-o", str(tmp_path / "gold.csv")
    )
    one_line_error(rc, err, "the --gold file")
    rc, _, err = run_main(capsys, "distill", str(tmp_path / "in.csv"), "-o", str(tmp_path / "in.csv"))
    one_line_error(rc, err, "the labeled input")
    rc, _, err = run_main(capsys, "distill", str(tmp_path / "in.csv"), "-o", str(tmp_path / "m"))
    assert rc != 0  # (m.card.json is free: this fails later, on the tiny unlabeled input)
    (tmp_path / "x.csv.card.json").write_text("{}")
    rc, _, err = run_main(capsys, "distill", str(tmp_path / "x.csv.card.json"), "-o", str(tmp_path / "x.csv"))
    one_line_error(rc, err, "x.csv.card.json")
    rc, _, err = run_main(capsys, "merge", str(tmp_path / "in.csv"), "-o", str(tmp_path / "in.csv"))
    one_line_error(rc, err, "one of the shards")
    assert (tmp_path / "gold.csv").read_text() == "id,label\nr0,positive\n"
    assert (tmp_path / "m.skops").read_bytes() == b"model"
