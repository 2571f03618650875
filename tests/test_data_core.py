"""Core modules: Dataset save/load/stats/validate, atomic writers, config overrides, prompt templates."""
from __future__ import annotations

import json
import os

import pytest

from genrec.config import load_config, set_key
from genrec.dataset import Dataset, Item
from genrec.io import BadLines, DataError, atomic_dir, atomic_write, read_lines
from genrec.prompts import PromptBuilder, load_templates, template_words


def test_roundtrip_keeps_items_fields_users_and_order(tmp_path, synth_dataset):
    synth_dataset.save(tmp_path / "d")
    again = Dataset.load(tmp_path / "d")
    assert list(again.users) == list(synth_dataset.users) and again.users == synth_dataset.users
    assert {k: (v.text, v.fields) for k, v in again.items.items()} == {k: (v.text, v.fields) for k, v in synth_dataset.items.items()}
    stats = json.loads((tmp_path / "d" / "stats.json").read_text())
    assert stats["users"] == 120 and stats["items"] == 60


def test_stats_values():
    ds = Dataset(items={k: Item(k, k) for k in "abcd"}, users={"u": ["a", "b"], "v": ["a", "b", "c", "d"], "w": ["c", "d", "a"]})
    s = ds.stats()
    assert (s["users"], s["items"], s["interactions"]) == (3, 4, 9)
    assert s["density"] == pytest.approx(9 / 12) and s["mean_seq_len"] == 3 and s["median_seq_len"] == 3


def test_validate_errors():
    with pytest.raises(DataError, match="empty sequence"):
        Dataset(items={}, users={"u": []}).validate()
    with pytest.raises(DataError, match="'x', which has no text"):
        Dataset(items={"a": Item("a", "t")}, users={"u": ["a", "x"]}).validate()


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        Dataset.load(tmp_path / "none")
    (tmp_path / "item_plain_text.txt").write_text("a text\n")
    (tmp_path / "user_sequence.txt").write_text("u a a\n")
    (tmp_path / "items.jsonl").write_text('{"item": "a"}\n{broken\n')
    with pytest.raises(DataError, match=r"items\.jsonl:2: malformed JSON"):
        Dataset.load(tmp_path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
    with atomic_write(target) as f:
        f.write("new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o044) == 0o044  # readable like any output


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(out) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError
    assert sorted(p.name for p in out.iterdir()) == ["a"] and os.listdir(tmp_path) == ["out"]
    with atomic_dir(out) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c"]


def test_read_lines_gz_bom_and_missing(tmp_path):
    import gzip

    with gzip.open(tmp_path / "x.gz", "wt", encoding="utf-8-sig") as f:
        f.write("héllo\nwörld")
    assert list(read_lines(tmp_path / "x.gz", BadLines())) == [(1, "héllo\n"), (2, "wörld")]
    with pytest.raises(DataError, match="file not found"):
        list(read_lines(tmp_path / "y", BadLines()))
    with pytest.raises(DataError, match="not a file"):
        list(read_lines(tmp_path, BadLines()))


def test_config_base_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {d_model: 64, layers: 2}\nlr: 0.001\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\nmodel: {layers: 4}\n")
    cfg = load_config(tmp_path / "run.yaml", ["lr=3e-4", "model.heads=2", "new.deep.key=[1, 2]"])
    assert cfg == {"model": {"d_model": 64, "layers": 4, "heads": 2}, "lr": 3e-4, "new": {"deep": {"key": [1, 2]}}}
    with pytest.raises(ValueError, match="key=value"):
        set_key({}, "novalue")
    with pytest.raises(ValueError, match="not a section"):
        set_key({"a": 1}, "a.b=2")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(DataError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(DataError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(DataError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_templates_and_errors(tmp_path):
    templates = load_templates()
    assert len(templates) == 10 and all("{user}" in t and "{history}" in t for t in templates)
    assert all("{" not in w for w in template_words())
    (tmp_path / "t.txt").write_text("# comment\n{user} bought {history} {history}\n")
    with pytest.raises(DataError, match=r"t\.txt:2: template must contain \{history\} exactly once"):
        load_templates(tmp_path / "t.txt")
    (tmp_path / "e.txt").write_text("# only a comment\n")
    with pytest.raises(DataError, match="no templates"):
        load_templates(tmp_path / "e.txt")


def test_prompt_spans_point_at_item_ids(tokenizer):
    builder = PromptBuilder(tokenizer, max_length=64)
    hist = [[101, 102], [103], [104, 105, 106]]
    p = builder.build(hist, template=0)
    assert [p.input_ids[a:b] for a, b in p.item_spans] == hist
    assert p.input_ids[-1] == tokenizer.eos_token_id
    user = builder.build(hist, template=0, user=[107, 108])
    assert [107, 108] == user.input_ids[user.input_ids.index(107):][:2]
    long = builder.build([[200 + i] * 5 for i in range(40)], template=3)
    assert len(long.input_ids) <= 64 and long.item_spans
    assert long.input_ids[long.item_spans[-1][0]] == 239  # the most recent items are the ones kept
