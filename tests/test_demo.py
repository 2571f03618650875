"""The README's main command in its quick form: the whole pipeline end to end (Ray ID generation, 2-process ZeRO-2
training, evaluation, zero-shot on a second platform)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from idgen.idtable import IdTable


@pytest.mark.slow
def test_demo_quick_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "idgenrec.cli", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "demo.json").read_text())
    methods = {(r["method"], r["dataset"]) for r in result["rows"]}
    assert {("idgenrec", "retail"), ("idgenrec (zero-shot)", "outdoor"), ("popularity", "retail"),
            ("random", "outdoor")} <= methods
    for row in result["rows"]:
        for k in (5, 10):
            assert 0.0 <= row[f"NDCG@{k}"] <= row[f"HR@{k}"] <= 1.0
    initial = IdTable.load(out / "idtable-initial.tsv")
    learned = IdTable.load(out / "train" / "export" / "idtable.tsv")
    initial.check()
    learned.check()
    assert set(initial.ids) == set(learned.ids)
    for part in ("recommender", "generator", "tokenizer"):
        assert (out / "train" / "export" / part).is_dir()
    assert "HR@10" in proc.stdout and "zero-shot" in proc.stdout
