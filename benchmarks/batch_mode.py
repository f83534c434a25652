"""label --batch on 2,000 rows (1,500 unique texts) against the in-test Files/Batches fake (tests/fakebatch.py), with
no expiry and with 30% of each batch expiring: rows labeled, lines paid per unique text, online requests, labels
against an online run, and an online rerun after the batch run. Run from the repository root:
`PYTHONPATH=$PWD python benchmarks/batch_mode.py`."""

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = ["tests"]
import json  # noqa: E402

from conftest import write_config  # noqa: E402
from fakebatch import FakeBatch  # noqa: E402

from llmlabel.config import load_config  # noqa: E402
from llmlabel.pipeline.batch import BatchOptions, run_batch  # noqa: E402
from llmlabel.pipeline.options import RunOptions  # noqa: E402
from llmlabel.pipeline.run import run_job  # noqa: E402

argparse.ArgumentParser(description="label --batch against tests/fakebatch.py, with and without expiry").parse_args()
for frac in (0.0, 0.3):
    fb = FakeBatch(expire_fraction=frac).start()
    d = Path(tempfile.mkdtemp())
    rows = [{"id": f"r{i}", "text": f"text {i % 1500} is {'good' if i % 3 else 'bad'}"} for i in range(2000)]
    with open(d / "in.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text"])
        w.writeheader()
        w.writerows(rows)
    cfg = load_config(write_config(d / "c.yaml", fb.base_url))
    t = time.time()
    res = run_batch(cfg, d / "in.csv", d / "out.jsonl", RunOptions(progress=False), BatchOptions(poll=0.01))
    el = time.time() - t
    out = [json.loads(l) for l in open(d / "out.jsonl")]
    unique = len({r["text"] for r in rows})
    paid = len(fb.answered) + fb.online
    print(
        f"expire={frac}: {el:.1f}s, rows {len(out)}, labeled {sum(o['label'] is not None for o in out)}, unique texts {unique}, "
        f"batch lines answered {len(fb.answered)} (distinct {len(set(fb.answered))}), online {fb.online}, paid/unique {paid / unique:.3f}, batches {len(fb.batches)}"
    )
    cfg2 = cfg.model_copy(update={"cache_dir": str(d / "c2")})
    before = fb.online
    run_job(cfg2, d / "in.csv", d / "online.jsonl", RunOptions(progress=False))
    on = [json.loads(l)["label"] for l in open(d / "online.jsonl")]
    print("  labels equal online:", on == [o["label"] for o in out])
    b2 = fb.online
    run_job(cfg, d / "in.csv", d / "again.jsonl", RunOptions(progress=False))
    print("  online rerun requests after batch:", fb.online - b2)
    fb.stop()
