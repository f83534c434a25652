"""DataFrames and Hugging Face datasets in and out: `Labeler.label` / `alabel` / `llmlabel.audit` return the kind
they were given with the result columns added, and `llmlabel label` reads dataset folders (in-test server)."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import read_jsonl, run_cli, write_config

import llmlabel
from llmlabel.errors import InputError

pd = pytest.importorskip("pandas")
datasets = pytest.importorskip("datasets")

TEXTS = ["great phone", "broke in a week", "love it", "awful battery", "works fine", "never again"]


def config(tmp_path, fake):
    return {
        "task": {"labels": ["positive", "negative"]},
        "cache_dir": str(tmp_path / "cache"),
        "judges": [{"name": "a", "model": "m", "base_url": fake.base_url, "concurrency": 4, "timeout": 5}],
    }


def frame():
    return pd.DataFrame(
        {"review": TEXTS, "rid": [f"r{i}" for i in range(6)], "label": ["gold"] * 6},
        index=pd.Index([10, 11, 12, 13, 14, 15], name="row"),
    )


def test_a_dataframe_comes_back_a_dataframe_with_result_columns(tmp_path, fake):
    df = frame()
    with llmlabel.Labeler(config(tmp_path, fake)) as labeler:
        out = labeler.label(df, text_column="review", id_column="rid")
        plain = labeler.label(TEXTS)
    assert isinstance(out, pd.DataFrame) and out.index.equals(df.index)
    assert list(df.columns) == ["review", "rid", "label"]  # the caller's frame is left as it was
    # The input's own `label` column is kept as label_input, as `llmlabel label` keeps it.
    assert list(out.columns) == ["review", "rid", "label_input", "label", "confidence", "prob_positive",
                                 "prob_negative", "candidates", "judges", "error"]  # fmt: skip
    assert out["label"].tolist() == [r.label for r in plain]
    assert out["label_input"].tolist() == ["gold"] * 6
    assert (out["prob_positive"] + out["prob_negative"]).round(6).eq(1.0).all()
    assert out["judges"].iloc[0]["a"]["label"] == out["label"].iloc[0]
    assert fake.requests == 6  # the list call was served from the cache


def test_a_dataset_comes_back_a_dataset_and_alabel_too(tmp_path, fake):
    ds = datasets.Dataset.from_dict({"text": TEXTS, "label": [0, 1, 0, 1, 0, 1]}).cast_column(
        "label", datasets.ClassLabel(names=["positive", "negative"])
    )
    with llmlabel.Labeler(config(tmp_path, fake)) as labeler:
        out = labeler.label(ds)
        again = asyncio.run(labeler.alabel(ds))
        df_async = asyncio.run(labeler.alabel(frame(), text_column="review"))
        shuffled = labeler.label(ds.shuffle(seed=1))  # a view over the same table: results stay with their rows
    assert dict(zip(shuffled["text"], shuffled["label"])) == dict(zip(out["text"], out["label"]))
    assert isinstance(out, datasets.Dataset) and len(out) == 6
    assert out.column_names == ["text", "label_input", "label", "confidence", "prob_positive", "prob_negative",
                                "candidates", "judges", "error"]  # fmt: skip
    assert out["label"] == again["label"] == df_async["label"].tolist()
    assert json.loads(out[0]["judges"])["a"]["label"] == out[0]["label"]  # JSON text: Arrow needs one type
    assert ds.column_names == ["text", "label"]
    assert fake.requests == 6


def test_a_multi_label_task_adds_the_set_as_a_list_column(tmp_path):
    from fakeserver import FakeLLM

    labels = ["joy", "fear", "anger"]
    server = FakeLLM(answers={"t0": "joy|fear", "t1": "anger"}, labels=labels).start()
    try:
        cfg = {
            "task": {"labels": labels, "multi_label": True},
            "cache_dir": str(tmp_path / "cache"),
            "judges": [{"name": "a", "model": "m", "base_url": server.base_url, "timeout": 5}],
        }
        with llmlabel.Labeler(cfg) as labeler:
            out = labeler.label(pd.DataFrame({"text": ["t0", "t1"]}))
    finally:
        server.stop()
    assert out["labels"].tolist() == [["joy", "fear"], ["anger"]] and out["label"].tolist() == ["joy|fear", "anger"]
    assert list(out.columns)[:4] == ["text", "label", "labels", "confidence"]


def test_table_errors_are_one_clear_line(tmp_path, fake):
    with llmlabel.Labeler(config(tmp_path, fake)) as labeler:
        with pytest.raises(InputError, match="no column 'text'.*pass text_column="):
            labeler.label(frame())
        with pytest.raises(InputError, match="DatasetDict"):
            labeler.label(datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}))
    assert fake.requests == 0


@pytest.mark.slow
def test_audit_a_dataframe_and_a_dataset(tmp_path, fake):
    texts, given = [], []
    for i in range(40):
        lab = "positive" if i % 2 else "negative"
        texts.append(f"item {i} was {'great' if lab == 'positive' else 'awful'}")
        fake.answers[texts[-1]] = lab
        given.append(("negative" if lab == "positive" else "positive") if i % 9 == 4 else lab)
    flipped = {100 + i for i in range(40) if i % 9 == 4}
    cfg = config(tmp_path, fake)
    cfg["judges"] += [{**cfg["judges"][0], "name": "b", "model": "m-b"}]
    with llmlabel.Labeler(cfg) as labeler:
        df = pd.DataFrame({"text": texts, "label": given}, index=range(100, 140))
        out = llmlabel.audit(df, labeler=labeler)
        report = llmlabel.audit(texts, given, labeler)
        codes = [["positive", "negative"].index(g) for g in given]
        ds = datasets.Dataset.from_dict({"text": texts, "label": codes})
        ds = ds.cast_column("label", datasets.ClassLabel(names=["positive", "negative"]))
        ds_out = llmlabel.audit(ds, labeler=labeler, options=llmlabel.AuditOptions(folds=5))
    assert isinstance(out, pd.DataFrame) and out.index.equals(df.index)
    assert list(out.columns) == ["text", "label", "is_label_issue", "label_score", "given_label", "predicted_label",
                                 "judge_score", "cleanlab_score"]  # fmt: skip
    assert 0 < out["is_label_issue"].sum() and set(out.index[out["is_label_issue"]]) <= flipped
    assert out["label_score"].tolist() == [report.scores[str(i)] for i in range(40)]
    assert out["predicted_label"].tolist() == [fake.answers[t] for t in texts]
    assert out.attrs["llmlabel_audit"]["rows"] == 40
    # cleanlab's get_issues(): input order; by_score=True puts the most suspicious first.
    issues = report.issues()
    assert issues.index.tolist() == [str(i) for i in range(40)]
    assert issues["is_label_issue"].tolist() == out["is_label_issue"].tolist()
    ranked = report.issues(by_score=True)
    assert ranked["label_score"].is_monotonic_increasing
    assert set(ranked.index[: len(flipped)]) == {str(i - 100) for i in flipped}
    # A ClassLabel column is read as its names.
    assert isinstance(ds_out, datasets.Dataset) and ds_out["given_label"] == given
    assert ds_out["is_label_issue"] == out["is_label_issue"].tolist()
    # Row dicts: their columns, as a DataFrame's; an AuditReport back, like texts.
    dicts = llmlabel.audit([{"rid": f"k{i}", "text": t, "label": g} for i, (t, g) in enumerate(zip(texts, given))],
                           config=cfg, id_column="rid")  # fmt: skip
    assert [dicts.scores[f"k{i}"] for i in range(40)] == out["label_score"].tolist()
    with pytest.raises(InputError, match="no column 'label'"):
        llmlabel.audit([{"text": "x"}], config=cfg)
    with pytest.raises(InputError, match="unknown option 'precision'"):
        llmlabel.audit(texts, given, config=cfg, precision=0.9)


def write_hf_folders(tmp_path, n=12):
    rows = {"id": [f"h{i}" for i in range(n)], "text": [f"hf review {i}" for i in range(n)], "label": [0, 1] * (n // 2)}
    ds = datasets.Dataset.from_dict(rows).cast_column("label", datasets.ClassLabel(names=["positive", "negative"]))
    ds.save_to_disk(str(tmp_path / "saved"), num_shards=2)
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    ds.select(range(0, 7)).to_parquet(str(hub / "train-00000-of-00002.parquet"))
    ds.select(range(7, n)).to_parquet(str(hub / "train-00001-of-00002.parquet"))
    return rows


@pytest.mark.slow
def test_label_reads_a_saved_dataset_and_a_parquet_shard_folder(tmp_path, fake):
    rows = write_hf_folders(tmp_path)
    cfg = write_config(tmp_path / "c.yaml", fake.base_url)
    for src, name in ((tmp_path / "saved", "a.jsonl"), (tmp_path / "hub", "b.jsonl")):
        r = run_cli("label", str(src), "-c", str(cfg), "-o", str(tmp_path / name), "-q")
        assert r.returncode == 0, r.stderr
        got = read_jsonl(tmp_path / name)
        assert [g["id"] for g in got] == rows["id"] and all(g["label"] for g in got)
        # The ClassLabel codes are read as their names (from dataset_info.json / the Parquet metadata).
        assert [g["label_input"] for g in got] == ["positive", "negative"] * 6
    assert fake.requests == 12  # the second folder holds the same rows: all cached
    # A folder with several splits: one line naming the glob that picks one, which works.
    hub = tmp_path / "hub" / "data"
    (hub / "test-00000-of-00001.parquet").write_bytes((hub / "train-00000-of-00002.parquet").read_bytes())
    r = run_cli("label", str(tmp_path / "hub"), "-c", str(cfg), "-o", str(tmp_path / "c.jsonl"), "-q")
    assert r.returncode != 0 and "several splits (test, train)" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("label", str(hub / "train-*.parquet"), "-c", str(cfg), "-o", str(tmp_path / "c.jsonl"), "-q")
    assert r.returncode == 0, r.stderr
    assert len(read_jsonl(tmp_path / "c.jsonl")) == 12
    # `llmlabel audit` of a saved dataset: its ClassLabel names are the given labels.
    r = run_cli("audit", str(tmp_path / "saved"), "-c", str(cfg), "-o", str(tmp_path / "audit.jsonl"), "-q",
                "--no-classifier")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(a["given_label"] for a in read_jsonl(tmp_path / "audit.jsonl")) == ["negative"] * 6 + ["positive"] * 6


def test_importing_llmlabel_imports_neither_pandas_nor_datasets():
    import subprocess
    import sys

    code = "import sys, llmlabel; llmlabel.Labeler; llmlabel.audit; print('pandas' in sys.modules, 'datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
