"""Evaluation harness and CLIs: checkpoint loading and its errors, sharding, metrics over every user once, recommend."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genrec.dataset import Dataset
from genrec.io import DataError
from genrec.splits import leave_one_out
from idgen.idtable import IdTable

TINY = dict(d_model=32, d_ff=64, d_kv=16, num_layers=1, num_decoder_layers=1, num_heads=2)
OVERRIDES = ["eval.ids=idtable", "eval.num_beams=10", "eval.batch_size=16"]
SET = [arg for o in OVERRIDES for arg in ("--set", o)]  # recommend takes overrides as options


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def title_table(dataset: Dataset) -> IdTable:
    """A fixed ID per item: its title, lowercased (the key is appended to the rare duplicate)."""
    ids, seen = {}, set()
    for key, item in dataset.items.items():
        tid = item.text.split(";")[0].removeprefix("title:").strip().lower()
        tid = f"{tid} {key}" if tid in seen else tid
        seen.add(tid)
        ids[key] = tid
    return IdTable(ids)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, synth_dataset, tokenizer) -> Path:
    from genrec.modeling import build_t5
    from pretrain.export import export

    torch.manual_seed(0)
    rec, gen = build_t5(len(tokenizer), **TINY), build_t5(len(tokenizer), **TINY, dropout_rate=0.0)
    table = title_table(synth_dataset)
    texts = [item.text for item in synth_dataset.items.values()]
    enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    labels = tokenizer([table.ids[k] for k in synth_dataset.items], padding=True, return_tensors="pt").input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    for _ in range(30):  # enough for the generator to write distinct, title-like IDs
        loss = gen(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("ckpt") / "export"
    return export(out, rec, gen, tokenizer, table, {"eval": {"ks": [5, 10]}, "idgen": {"groups": 4}})


def parser() -> argparse.ArgumentParser:
    from zeroshot import cli

    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers(dest="command", required=True))
    return p


def run_cli(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


def test_eval_settings():
    from zeroshot.harness import EVAL_DEFAULTS, eval_settings

    assert eval_settings(None) == EVAL_DEFAULTS
    assert eval_settings({"eval": {"ks": [1, 3], "num_beams": 5}})["ks"] == [1, 3]
    with pytest.raises(ValueError, match="unknown config key 'eval.beams'; did you mean eval.num_beams"):
        eval_settings({"eval": {"beams": 3}})
    with pytest.raises(ValueError, match="num_beams"):
        eval_settings({"eval": {"ks": [50]}})
    with pytest.raises(ValueError, match="eval.ids"):
        eval_settings({"eval": {"ids": "titles"}})


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_shards_cover_every_user_once(world):
    from zeroshot.harness import shard

    order = list(range(23))
    parts = [shard(order, r, world) for r in range(world)]
    assert sorted(i for p in parts for i in p) == order
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_evaluate_counts_every_user_and_matches_manual_ranking(export_dir, synth_dataset):
    from genrec.decoding import rank_prompts
    from genrec.metrics import hr_ndcg
    from genrec.prompts import PromptBuilder
    from genrec.trie import PrefixTrie
    from zeroshot.harness import evaluate, load_checkpoint

    ckpt = load_checkpoint(export_dir)
    cfg = {"eval": {"num_beams": 10, "batch_size": 16}}
    m = evaluate(ckpt.recommender, ckpt.tokenizer, ckpt.idtable, synth_dataset, "test", cfg, progress=False)
    samples = leave_one_out(synth_dataset, "test")
    assert m["users"] == len(samples) == len(synth_dataset.users)
    # the same numbers computed directly: other batches, no sharding
    tok_ids = ckpt.idtable.token_ids(ckpt.tokenizer)
    trie = PrefixTrie(tok_ids, ckpt.tokenizer.eos_token_id, ckpt.tokenizer.pad_token_id)
    builder = PromptBuilder(ckpt.tokenizer)
    prompts = [builder.build([tok_ids[h] for h in s.history], 0).input_ids for s in samples]
    ranked = rank_prompts(ckpt.recommender, prompts, trie, batch_size=7, num_beams=10, k=10)
    expect = hr_ndcg([[k for k, _ in r] for r in ranked], [s.target for s in samples])
    for key, value in expect.items():
        assert m[key] == pytest.approx(value, abs=1e-9)
    assert 0.0 <= m["NDCG@5"] <= m["HR@5"] <= m["HR@10"] <= 1.0


@pytest.fixture
def decoded_prompts(monkeypatch) -> list[list[int]]:
    """Every prompt handed to ``rank_prompts`` while the test runs (which still ranks them)."""
    import genrec.decoding

    seen: list[list[int]] = []
    real = genrec.decoding.rank_prompts

    def spy(model, prompts, *args, **kwargs):
        seen.extend(prompts)
        return real(model, prompts, *args, **kwargs)

    monkeypatch.setattr(genrec.decoding, "rank_prompts", spy)
    return seen


def test_evaluate_builds_prompts_as_the_config_says(export_dir, synth_dataset, decoded_prompts):
    """Evaluation prompts follow the config's ``prompt`` section (templates, separator, max_length) as training's
    do, and an export carries the templates themselves."""
    import yaml

    from genrec.prompts import PromptBuilder, load_templates
    from zeroshot.harness import evaluate, load_checkpoint

    ckpt = load_checkpoint(export_dir)
    prompt = {"templates": ["history {history} of {user}"], "separator": ";", "max_length": 24}
    cfg = {"eval": {"num_beams": 10}, "prompt": prompt}
    evaluate(ckpt.recommender, ckpt.tokenizer, ckpt.idtable, synth_dataset, "test", cfg, progress=False)
    builder = PromptBuilder.from_config(ckpt.tokenizer, prompt)
    tok_ids = ckpt.idtable.token_ids(ckpt.tokenizer)
    expect = [builder.build([tok_ids[h] for h in s.history], 0).input_ids for s in leave_one_out(synth_dataset, "test")]
    assert sorted(decoded_prompts) == sorted(expect) and max(map(len, decoded_prompts)) <= 24
    exported = yaml.safe_load((export_dir / "config.yaml").read_text())["prompt"]["templates"]
    assert exported == load_templates()
    with pytest.raises(DataError, match=r"prompt\.templates:2: template must contain \{user\} exactly once"):
        load_templates(["{user} bought {history}", "only {history}"])


def test_evaluate_with_user_ids_names_users_from_the_prompt_history(export_dir, synth_dataset, decoded_prompts):
    """``prompt.user_ids``: every test prompt carries the user ID that the generator makes from that prompt's
    history (``idgen.userids``), and evaluation without a generator is refused."""
    from genrec.prompts import PromptBuilder
    from idgen.userids import history_key, profile_ids, prompt_texts
    from zeroshot.harness import evaluate, load_checkpoint

    ckpt = load_checkpoint(export_dir)
    cfg = {"eval": {"num_beams": 10}, "prompt": {"user_ids": True}, "idgen": {"max_text_tokens": 48, "groups": 4}}
    m = evaluate(ckpt.recommender, ckpt.tokenizer, ckpt.idtable, synth_dataset, "test", cfg, progress=False,
                 generator=ckpt.generator)
    samples = leave_one_out(synth_dataset, "test")
    users = profile_ids(ckpt.generator, ckpt.tokenizer, prompt_texts(samples, synth_dataset.items), cfg["idgen"],
                        progress=False)  # the recipe's idgen settings, as evaluation reads them
    assert len(users) == len({s.history for s in samples})
    user_tokens = users.token_ids(ckpt.tokenizer)
    builder = PromptBuilder.from_config(ckpt.tokenizer, cfg["prompt"])
    tok_ids = ckpt.idtable.token_ids(ckpt.tokenizer)
    expect = [builder.build([tok_ids[h] for h in s.history], 0, user_tokens[history_key(s.history)]).input_ids
              for s in samples]
    assert sorted(decoded_prompts) == sorted(expect) and m["users"] == len(samples)
    with pytest.raises(ValueError, match="needs the generator"):
        evaluate(ckpt.recommender, ckpt.tokenizer, ckpt.idtable, synth_dataset, "test", cfg, progress=False)


def test_evaluate_finds_a_memorised_target(export_dir, synth_dataset, tokenizer, caplog):
    """A recommender trained to always answer one item puts it first: HR@1 = share of users whose target it is."""
    from genrec.modeling import build_t5
    from zeroshot.harness import evaluate

    table = title_table(synth_dataset)
    favourite = "reti00001"
    target = torch.tensor([tokenizer(table.ids[favourite])["input_ids"]])
    torch.manual_seed(0)
    model = build_t5(len(tokenizer), **TINY, dropout_rate=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    prompt = torch.tensor([tokenizer("purchase history")["input_ids"]])
    for _ in range(60):
        loss = model(input_ids=prompt, labels=target).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    m = evaluate(model, tokenizer, table, synth_dataset, "test", {"eval": {"ks": [1], "num_beams": 4}}, progress=False)
    share = sum(s.target == favourite for s in leave_one_out(synth_dataset, "test")) / m["users"]
    assert share > 0 and m["HR@1"] == pytest.approx(share)
    # eval.valid_users: validation on a fixed sample of users (the same one each time); test stays complete
    cfg = {"eval": {"ks": [1], "num_beams": 4, "valid_users": 25}}
    valid = leave_one_out(synth_dataset, "valid")
    assert len(valid) > 25
    first, again = (evaluate(model, tokenizer, table, synth_dataset, "valid", cfg, progress=False) for _ in range(2))
    assert first == again and first["users"] == 25
    assert evaluate(model, tokenizer, table, synth_dataset, "test", cfg, progress=False) == m
    # eval.test_users: the same mechanism for the test split, with a warning that the numbers are not comparable
    with caplog.at_level("WARNING", logger="zeroshot.harness"):
        capped = evaluate(model, tokenizer, table, synth_dataset, "test", {"eval": {**cfg["eval"], "test_users": 20}},
                          progress=False)
    assert capped["users"] == 20 and "NOT comparable" in caplog.text


def test_checkpoint_errors(export_dir, tmp_path):
    from zeroshot.harness import load_checkpoint

    with pytest.raises(DataError, match="checkpoint folder not found"):
        load_checkpoint(tmp_path / "nope")
    broken = tmp_path / "no_generator"
    shutil.copytree(export_dir, broken)
    shutil.rmtree(broken / "generator")
    with pytest.raises(DataError, match="no generator"):
        load_checkpoint(broken)
    assert load_checkpoint(broken, require_generator=False).generator is None
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(DataError, match="no tokenizer"):
        load_checkpoint(broken, require_generator=False)


def test_zeroshot_cli_table_and_json(export_dir, synth_dir, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert run_cli(["zeroshot", "--checkpoint", str(export_dir), "--dataset", f"synth={synth_dir}",
                    "--split", "valid", "--out", str(out), *OVERRIDES]) == 0
    printed = capsys.readouterr().out
    assert "NDCG@10" in printed and "synth" in printed
    res = json.loads(out.read_text())
    row, pop = res["rows"]
    assert row["method"] == "idgenrec" and row["dataset"] == "synth" and res["split"] == "valid"
    assert row["users"] == len(leave_one_out(Dataset.load(synth_dir), "valid"))
    # the popularity reference, fitted on the dataset's training split, on the same users
    from genrec.baselines.popularity import Popularity
    from genrec.metrics import hr_ndcg

    ds = Dataset.load(synth_dir)
    valid = leave_one_out(ds, "valid", 20)
    expect = hr_ndcg(Popularity.fit(leave_one_out(ds, "train"), ds.items).recommend(valid, 10), [s.target for s in valid])
    assert pop["method"] == "popularity" and pop["users"] == row["users"]
    assert {k: pop[k] for k in expect} == pytest.approx(expect)


def test_cli_errors(export_dir, synth_dir, tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        run_cli(["zeroshot", "--checkpoint", str(export_dir), "--dataset", f"x={tmp_path / 'missing'}", *OVERRIDES])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "item_plain_text.txt").write_text("")
    (empty / "user_sequence.txt").write_text("")
    with pytest.raises(DataError, match="empty file"):
        run_cli(["zeroshot", "--checkpoint", str(export_dir), "--dataset", str(empty), *OVERRIDES])
    short = tmp_path / "short"
    shutil.copytree(synth_dir, short)
    (short / "user_sequence.txt").write_text("u1 reti00001\nu2 reti00002\n")
    with pytest.raises(DataError, match="no user has a test sample"):
        run_cli(["zeroshot", "--checkpoint", str(export_dir), "--dataset", str(short), *OVERRIDES])
    no_gen = tmp_path / "no_gen"
    shutil.copytree(export_dir, no_gen)
    shutil.rmtree(no_gen / "generator")
    with pytest.raises(DataError, match="no generator"):
        run_cli(["zeroshot", "--checkpoint", str(no_gen), "--dataset", str(synth_dir), *OVERRIDES])


def test_recommend_from_history_keys(export_dir, synth_dir, synth_dataset, capsys):
    history = synth_dataset.users["retu00000"][:3]
    assert run_cli(["recommend", "--checkpoint", str(export_dir), "--data", str(synth_dir), "--history", *history,
                    *SET, "-k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and lines[0].split()[:3] == ["rank", "score", "item"]
    table = title_table(synth_dataset)
    keys = [line.split()[2] for line in lines[1:]]
    assert len(set(keys)) == 5 and all(k in table.ids for k in keys)
    with pytest.raises(DataError, match="not in the dataset"):
        run_cli(["recommend", "--checkpoint", str(export_dir), "--data", str(synth_dir), "--history", "nope", *SET])


def test_recommend_with_user_ids_names_the_user(export_dir, synth_dir, synth_dataset, capsys):
    history = synth_dataset.users["retu00000"][:3]
    argv = ["recommend", "--checkpoint", str(export_dir), "--data", str(synth_dir), "--history", *history, *SET, "-k", "5"]
    assert run_cli([*argv, "--set", "prompt.user_ids=true"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("user ID: '") and len(lines) == 7


def test_zeroshot_names_unseen_items_with_the_generator(export_dir, synth_dir, tmp_path):
    """Default eval.ids=auto: the checkpoint's table does not cover this dataset, so the generator names every item."""
    other = tmp_path / "other"
    shutil.copytree(synth_dir, other)
    lines = (other / "item_plain_text.txt").read_text().splitlines()
    (other / "item_plain_text.txt").write_text("".join(f"x{line}\n" for line in lines))
    (other / "user_sequence.txt").write_text(
        "".join(" ".join(["u" + p[0], *("x" + k for k in p[1:])]) + "\n"
                for p in (line.split() for line in (synth_dir / "user_sequence.txt").read_text().splitlines())))
    out = tmp_path / "gen.json"
    assert run_cli(["zeroshot", "--checkpoint", str(export_dir), "--dataset", f"unseen={other}", "--out", str(out),
                    "eval.num_beams=10", "eval.batch_size=32"]) == 0
    row, _popularity = json.loads(out.read_text())["rows"]
    assert row["dataset"] == "unseen" and row["users"] == len(leave_one_out(Dataset.load(other), "test"))


def test_a_title_scheme_checkpoint_names_unseen_items_by_the_title_rule(export_dir, synth_dataset):
    """A recommender trained on fixed title IDs reads unseen items' IDs made by the same rule (with the checkpoint's
    ``ids.title_words``), not by a generator it never trained with; interaction-built P5-SID IDs cannot name unseen
    items, and say so."""
    from idgen.schemes import title_table as title_rule
    from zeroshot.harness import dataset_ids, id_scheme, load_checkpoint

    ckpt = load_checkpoint(export_dir)
    assert id_scheme(ckpt) == "idgenrec"
    ckpt.generator = None  # the title rule must not need one
    ckpt.config = {**ckpt.config, "ids": {"scheme": "title", "title_words": 3}}
    assert id_scheme(ckpt) == "title"
    table = dataset_ids(ckpt, synth_dataset, {"eval": {"ids": "generate"}})
    assert table.ids == title_rule(synth_dataset.items, max_words=3).ids
    assert max(len(i.split()) for i in table.ids.values()) <= 4  # three words, plus a counter on a duplicate

    ckpt.config["ids"] = {"scheme": "p5sid"}
    with pytest.raises(DataError, match=r"config\.yaml.*p5sid.*cannot name the \d+ unseen items"):
        dataset_ids(ckpt, synth_dataset, {"eval": {"ids": "generate"}})


def test_recommend_cold_start_item_enters_the_ranking(export_dir, synth_dir, synth_dataset, capsys):
    """A new item named by the generator is inserted into the trie: with as many beams as items, every item
    (the new one included) is ranked."""
    n = len(synth_dataset.items) + 1
    assert run_cli(["recommend", "--checkpoint", str(export_dir), "--data", str(synth_dir),
                    "--text", "title: Silkara Compact Hair Mask, Green", "--new-item", "title: Brand New Glow Serum",
                    "-k", str(n), "--set", "eval.ids=idtable", "--set", f"eval.num_beams={n}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("history text text-1: ID")
    ranked = [line.split()[2] for line in lines[2:]]
    assert len(ranked) == n and "new-1" in ranked


@pytest.mark.slow
def test_two_ranks_count_every_user_once(export_dir, synth_dir, tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo): the same numbers and user count as one process."""
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    argv = ["zeroshot", "--checkpoint", str(export_dir), "--dataset", f"synth={synth_dir}", *OVERRIDES]
    assert run_cli([*argv, "--out", str(one)]) == 0
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, *argv, "--out", str(two)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r1, p1), (r2, p2) = json.loads(one.read_text())["rows"], json.loads(two.read_text())["rows"]
    assert r2["users"] == r1["users"] == len(leave_one_out(Dataset.load(synth_dir), "test"))
    assert r2 == pytest.approx(r1) and p2 == pytest.approx(p1)


if __name__ == "__main__":  # the torchrun entry point of the test above
    sys.exit(run_cli(sys.argv[1:]))


def test_history_copy_counts_items_that_reuse_history_words():
    """bench/history_copy.py's measure: counters are not words; the first word must begin a history ID."""
    from bench.history_copy import copy_shares

    table = IdTable({"h1": "opi nail lacquer", "h2": "essie gel 2", "a": "opi top coat", "b": "gel polish red",
                     "c": "zuzu liner", "d": "red 2"})
    shares = copy_shares(table, [("h1", "h2"), ("h1",)], [["a", "b", "c"], ["d"]])
    assert shares == {"shares_a_history_word": 2 / 4, "first_word_starts_a_history_id": 1 / 4}
