"""Raw readers on fixture files written here: Amazon 2014 (gz, Python-literal meta), Amazon 2018, Yelp, the IDGenRec
text format; iterative k-core, chronological order with a stable tie-break, and every error path of bad input."""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from idgenrec.cli import main
from genrec.dataset import Dataset
from genrec.io import DataError
from genrec.readers import Interaction, TextOptions, kcore, read_amazon2014, read_amazon2018, read_yelp, sequences


def write(path: Path, lines: list[str]) -> Path:
    text = "".join(line + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def grid(users: int, items: int, t0: int = 1000) -> list[tuple[str, str, int]]:
    """Every user reviews every item, user u at times t0 + 10*i (so all counts are >= the other side's size)."""
    return [(f"U{u}", f"A{i}", t0 + 10 * i) for u in range(users) for i in range(items)]


def reviews_2014(rows: list[tuple[str, str, int]]) -> list[str]:
    return [json.dumps({"reviewerID": u, "asin": a, "unixReviewTime": t, "overall": 5.0}) for u, a, t in rows]


def meta_2014(asins: list[str]) -> list[str]:
    # Python literals, as in the 2014 dump: single quotes, a list of category lists, salesRank dict, HTML entity.
    return [
        repr({"asin": a, "title": f"Nail Polish {a} &amp; Top Coat", "brand": "OPI", "price": 7.5,
              "categories": [["Beauty", "Makeup", "Nails"], ["Beauty", "Nails"]], "salesRank": {"Beauty": 12}})
        for a in asins
    ]


@pytest.fixture
def amazon14(tmp_path):
    rows = grid(5, 5)
    return (
        write(tmp_path / "reviews_Beauty_5.json.gz", reviews_2014(rows)),
        write(tmp_path / "meta_Beauty.json.gz", meta_2014([f"A{i}" for i in range(5)])),
    )


def test_amazon2014_gz_literal_meta(amazon14):
    ds = read_amazon2014(*amazon14)
    assert ds.name == "reviews_Beauty_5"
    assert len(ds.users) == 5 and len(ds.items) == 5
    assert ds.users["U0"] == ["A0", "A1", "A2", "A3", "A4"]
    assert ds.items["A0"].text == "title: Nail Polish A0 & Top Coat; brand: OPI; categories: Beauty, Makeup, Nails"
    assert ds.items["A0"].fields["categories"] == ["Beauty", "Makeup", "Nails"]


def test_amazon2014_text_options(amazon14):
    opts = TextOptions(field_order=("brand", "title", "salesRank", "price"), lowercase=True, max_field_chars={"title": 11})
    ds = read_amazon2014(*amazon14, text=opts)
    assert ds.items["A1"].text == "brand: opi; title: nail polish; salesrank: beauty: 12; price: 7.5"


def test_amazon2014_never_evaluates_code(tmp_path):
    marker = tmp_path / "pwned"
    meta = write(tmp_path / "meta.json", [f"__import__('pathlib').Path({str(marker)!r}).touch()"])
    reviews = write(tmp_path / "r.json", reviews_2014(grid(1, 1)))
    with pytest.raises(DataError, match=r"meta\.json:1: malformed line"):
        read_amazon2014(reviews, meta, k=0)
    assert not marker.exists()


def test_amazon2018_json_lines(tmp_path):
    rows = grid(5, 5)
    reviews = write(tmp_path / "Beauty_5.json", [json.dumps({"reviewerID": u, "asin": a, "unixReviewTime": t}) for u, a, t in rows])
    meta = write(tmp_path / "meta_Beauty.json", [
        json.dumps({"asin": f"A{i}", "title": f"Serum {i}", "brand": "Lumi", "category": ["Beauty", "Skin Care", "Beauty"],
                    "description": ["Light <b>serum</b>.", "Daily use."]}) for i in range(5)
    ])
    ds = read_amazon2018(reviews, meta)
    assert ds.items["A3"].text == "title: Serum 3; brand: Lumi; category: Beauty, Skin Care"
    ds = read_amazon2018(reviews, meta, text=TextOptions(field_order=("title", "description")))
    assert ds.items["A3"].text == "title: Serum 3; description: Light serum ., Daily use."


def yelp_files(tmp_path: Path) -> tuple[Path, Path]:
    business = write(tmp_path / "business.json", [
        json.dumps({"business_id": f"B{i}", "name": f"Cafe {i}", "categories": "Coffee & Tea, Bakeries", "city": "Tempe",
                    "state": "AZ", "stars": 4.5, "review_count": 10,
                    "attributes": {"WiFi": "u'free'", "BusinessParking": "{'garage': False, 'street': True}"}})
        for i in range(4)
    ])
    reviews = [json.dumps({"user_id": f"U{u}", "business_id": f"B{i}", "date": f"201{i + (u % 2)}-05-0{u + 1} 10:00:00"})
               for u in range(4) for i in range(4)]
    return business, write(tmp_path / "review.json", reviews)


def test_yelp_nested_attributes_and_date_range(tmp_path):
    business, review = yelp_files(tmp_path)
    ds = read_yelp(business, review, k=4)
    assert len(ds.users) == 4 and len(ds.items) == 4
    assert ds.items["B0"].text == "name: Cafe 0; categories: Coffee & Tea, Bakeries; city: Tempe; state: AZ"
    opts = TextOptions(field_order=("name", "attributes"))
    ds = read_yelp(business, review, k=0, text=opts)
    assert ds.items["B1"].text == "name: Cafe 1; attributes: WiFi: free, BusinessParking: garage: no, street: yes"
    ds = read_yelp(business, review, date_range=("2011-01-01", "2013-01-01"), k=0)
    assert {i for seq in ds.users.values() for i in seq} == {"B0", "B1", "B2"}
    assert ds.users["U0"] == ["B1", "B2"] and ds.users["U1"] == ["B0", "B1"]
    with pytest.raises(DataError, match="no reviews in the date range"):
        read_yelp(business, review, date_range=("2030-01-01", "2031-01-01"))


def test_kcore_is_iterated_until_stable():
    # U2 has 2 items -> removed; that drops A2 to 1 user -> removed; then U1 has 1 item -> removed.
    rows = [("U0", "A0"), ("U0", "A1"), ("U1", "A0"), ("U1", "A2"), ("U2", "A2"), ("U2", "A3"),
            ("U3", "A0"), ("U3", "A1"), ("U4", "A1"), ("U4", "A0")]
    inter = [Interaction(u, a, 0, n) for n, (u, a) in enumerate(rows)]
    kept = kcore(inter, 2)
    assert {x.user for x in kept} == {"U0", "U3", "U4"} and {x.item for x in kept} == {"A0", "A1"}
    users, items = {}, {}
    for x in kept:
        users[x.user] = users.get(x.user, 0) + 1
        items[x.item] = items.get(x.item, 0) + 1
    assert min(users.values()) >= 2 and min(items.values()) >= 2
    assert kcore(inter, 0) == inter


def test_chronological_order_with_stable_tie_break():
    inter = [Interaction("u", "late", 30, 0), Interaction("u", "tie-first", 10, 1), Interaction("v", "x", 1, 2),
             Interaction("u", "tie-second", 10, 3), Interaction("u", "early", 5, 4)]
    assert sequences(inter) == {"u": ["early", "tie-first", "tie-second", "late"], "v": ["x"]}
    assert sequences(list(reversed(inter))) == sequences(inter)


def test_repeated_review_kept_once_at_earliest_time(tmp_path):
    rows = grid(5, 5) + [("U0", "A0", 99999)]
    ds = read_amazon2014(write(tmp_path / "r.json", reviews_2014(rows)), write(tmp_path / "m.json", meta_2014([f"A{i}" for i in range(5)])))
    assert ds.users["U0"] == ["A0", "A1", "A2", "A3", "A4"]


# ---- error paths -------------------------------------------------------------------------------------------------

def test_malformed_review_line_names_file_and_line(tmp_path, amazon14):
    lines = reviews_2014(grid(5, 5))
    lines[3] = '{"reviewerID": "U0", "asin": '
    bad = write(tmp_path / "bad.json", lines)
    with pytest.raises(DataError) as e:
        read_amazon2014(bad, amazon14[1])
    assert e.value.path == str(bad) and e.value.line == 4 and "malformed line" in e.value.problem


def test_skip_bad_lines_logs_a_count(tmp_path, amazon14, caplog):
    lines = reviews_2014(grid(5, 5))
    lines.insert(2, "not json at all")
    lines.insert(7, json.dumps({"reviewerID": "U9", "unixReviewTime": 5}))  # missing asin
    bad = write(tmp_path / "bad.json", lines)
    with caplog.at_level(logging.WARNING):
        ds = read_amazon2014(bad, amazon14[1], skip_bad_lines=True)
    assert len(ds.users) == 5
    assert f"skipped 2 bad line(s) in {bad}" in caplog.text


def test_missing_field_names_the_field(tmp_path, amazon14):
    lines = reviews_2014(grid(5, 5))
    lines[0] = json.dumps({"reviewerID": "U0", "asin": "A0"})
    with pytest.raises(DataError, match=r"bad\.json:1: missing field 'unixReviewTime'"):
        read_amazon2014(write(tmp_path / "bad.json", lines), amazon14[1])
    lines[0] = json.dumps({"reviewerID": "U0", "asin": "A0", "unixReviewTime": "yesterday"})
    with pytest.raises(DataError, match=r"bad\.json:1: field 'unixReviewTime' is not a unix time"):
        read_amazon2014(write(tmp_path / "bad.json", lines), amazon14[1])
    biz, review = yelp_files(tmp_path)
    write(biz, [json.dumps({"name": "no id"})])
    with pytest.raises(DataError, match=r"business\.json:1: missing field 'business_id'"):
        read_yelp(biz, review)


def test_empty_files(tmp_path, amazon14):
    empty = write(tmp_path / "empty.json.gz", ["", "   "])
    with pytest.raises(DataError, match="empty.json.gz: empty file"):
        read_amazon2014(empty, amazon14[1])
    with pytest.raises(DataError, match="empty.json.gz: empty file"):
        read_amazon2018(amazon14[0], empty)
    with pytest.raises(DataError, match="file not found"):
        read_amazon2014(tmp_path / "nope.json", amazon14[1])


def test_unreadable_files(tmp_path, amazon14):
    truncated = tmp_path / "cut.json.gz"
    truncated.write_bytes(amazon14[0].read_bytes()[:-20])
    with pytest.raises(DataError, match=r"cut\.json\.gz:\d+: unreadable \(EOFError"):
        read_amazon2014(truncated, amazon14[1])
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"reviewerID": "U0", "asin": "A0", "unixReviewTime": 1}\n{"reviewerID": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.json:2: not UTF-8 \(byte 0xe9 at column 20\)"):
        read_amazon2014(latin, amazon14[1])


def test_interacted_item_without_text(tmp_path, amazon14, caplog):
    meta = [m for m in meta_2014([f"A{i}" for i in range(5)])]
    meta[2] = repr({"asin": "A2", "title": "", "categories": []})
    path = write(tmp_path / "meta.json", meta)
    with pytest.raises(DataError, match=r"meta\.json: 1 interacted item\(s\) have no text, e.g. 'A2'"):
        read_amazon2014(amazon14[0], path)
    with caplog.at_level(logging.WARNING):
        ds = read_amazon2014(amazon14[0], path, k=4, skip_bad_lines=True)
    assert "A2" not in ds.items and all("A2" not in s for s in ds.users.values())
    assert "dropped 1 interacted item(s) without text" in caplog.text


def test_nothing_left_after_kcore(amazon14):
    with pytest.raises(DataError, match="no interactions left after 6-core"):
        read_amazon2014(*amazon14, k=6)


# ---- canonical text format and the CLI ---------------------------------------------------------------------------

def test_idgenrec_format_errors(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    write(d / "item_plain_text.txt", ["i1 title: a", "i2 title: b"])
    write(d / "user_sequence.txt", ["u1 i1 i2", "u2 i2 i1", "u1 i1"])
    with pytest.raises(DataError, match=r"user_sequence\.txt:3: user 'u1' listed twice"):
        Dataset.load(d)
    write(d / "user_sequence.txt", ["u1 i1 i2", "u2 i2 i3"])
    with pytest.raises(DataError, match=r"user_sequence\.txt:2: user 'u2': item 'i3' has no text"):
        Dataset.load(d)
    write(d / "user_sequence.txt", ["u1 i1 i2", "u2"])
    with pytest.raises(DataError, match=r"user_sequence\.txt:2: user 'u2' has no items"):
        Dataset.load(d)
    write(d / "user_sequence.txt", [])
    with pytest.raises(DataError, match=r"user_sequence\.txt: empty file"):
        Dataset.load(d)
    write(d / "item_plain_text.txt", ["i1 title: a", "i2"])
    with pytest.raises(DataError, match=r"item_plain_text\.txt:2: item 'i2' has no text"):
        Dataset.load(d)
    write(d / "item_plain_text.txt", ["i1 title: a", "i1 title: b"])
    with pytest.raises(DataError, match=r"item_plain_text\.txt:2: item 'i1' listed twice"):
        Dataset.load(d)


def test_prepare_cli_all_formats(tmp_path, amazon14, capsys):
    out = tmp_path / "out14"
    assert main(["data", "prepare", "amazon2014", "--reviews", str(amazon14[0]), "--meta", str(amazon14[1]), "--out", str(out),
                 "--fields", "title,brand", "--lowercase"]) == 0
    ds = Dataset.load(out)
    assert ds.items["A0"].text == "title: nail polish a0 & top coat; brand: opi"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["users"] == 5 and stats["interactions"] == 25 and stats["name"] == "out14"
    biz, review = yelp_files(tmp_path)
    assert main(["data", "prepare", "yelp", "--business", str(biz), "--review", str(review), "--k", "0",
                 "--date-range", "2011-01-01", "2013-01-01", "--out", str(tmp_path / "y")]) == 0
    assert len(Dataset.load(tmp_path / "y").items) == 3
    assert main(["data", "prepare", "idgenrec", str(out), "--k", "5", "--out", str(tmp_path / "copy")]) == 0
    assert Dataset.load(tmp_path / "copy").users == ds.users
    # a bad input: exit code 2, message names the file and line, the output folder is not created
    bad = write(tmp_path / "bad.json", ["{oops"])
    assert main(["data", "prepare", "amazon2018", "--reviews", str(bad), "--meta", str(amazon14[1]), "--out", str(tmp_path / "no")]) == 2
    assert f"{bad}:1: malformed line" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_duplicate_fields_bad_dates_and_keys(tmp_path, amazon14):
    lines = reviews_2014(grid(5, 5))
    lines[1] = '{"reviewerID": "U0", "asin": "A1", "asin": "A2", "unixReviewTime": 5}'
    with pytest.raises(DataError, match=r"bad\.json:2: malformed line \(ValueError: duplicate field 'asin'\)"):
        read_amazon2018(write(tmp_path / "bad.json", lines), amazon14[1])
    meta = write(tmp_path / "meta.json", ["{'asin': 'A0', 'title': 'x', 'title': 'y'}"])
    with pytest.raises(DataError, match=r"meta\.json:1: malformed line \(ValueError: duplicate field 'title'\)"):
        read_amazon2014(amazon14[0], meta)
    lines[1] = json.dumps({"reviewerID": "U 0", "asin": "A1", "unixReviewTime": 5})
    with pytest.raises(DataError, match=r"bad\.json:2: field 'reviewerID' is not a key \(a word without spaces\): 'U 0'"):
        read_amazon2018(write(tmp_path / "bad.json", lines), amazon14[1])
    lines[1] = json.dumps({"reviewerID": "U0", "asin": "A1", "unixReviewTime": "NaN"})
    with pytest.raises(DataError, match=r"bad\.json:2: field 'unixReviewTime' is not a unix time: 'NaN'"):
        read_amazon2018(write(tmp_path / "bad.json", lines), amazon14[1])
    biz, review = yelp_files(tmp_path)
    rows = review.read_text().splitlines()
    for date, problem in (("2013-13-01", "is not a calendar date"), ("last May", "is not a date")):
        rows[2] = json.dumps({"user_id": "U0", "business_id": "B2", "date": date})
        with pytest.raises(DataError, match=rf"review\.json:3: field 'date' {problem}"):
            read_yelp(biz, write(review, rows))


def test_encodings_and_all_lines_bad(tmp_path, amazon14, caplog):
    rows = reviews_2014(grid(5, 5))
    bom = tmp_path / "bom.json"
    bom.write_bytes("\n".join(rows).encode("utf-8-sig"))
    assert len(read_amazon2014(bom, amazon14[1]).users) == 5  # a UTF-8 byte-order mark is not an error
    utf16 = tmp_path / "utf16.json"
    utf16.write_bytes("\n".join(rows).encode("utf-16"))
    with pytest.raises(DataError, match=r"utf16\.json:1: not UTF-8 \(byte 0xff at column 1\)"):
        read_amazon2014(utf16, amazon14[1])
    with pytest.raises(DataError, match=r"utf16\.json: no valid records \(all 25 line\(s\) were bad\)"):
        read_amazon2014(utf16, amazon14[1], skip_bad_lines=True)


def test_idgenrec_format_skip_bad_lines(tmp_path, caplog, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "item_plain_text.txt").write_bytes(b"i1 title: a\ni2 title: caf\xe9\ni3\ni4 title: d\n")
    (d / "user_sequence.txt").write_bytes(b"u1 i1 i4\nu2 i2 i1\nu3 i1 i4 i1\nu1 i4\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"item_plain_text\.txt:2: not UTF-8 \(byte 0xe9 at column 14\)"):
        Dataset.load(d)
    with caplog.at_level(logging.WARNING):
        ds = Dataset.load(d, skip_bad_lines=True)
    assert ds.users == {"u1": ["i1", "i4"], "u3": ["i1", "i4", "i1"]} and sorted(ds.items) == ["i1", "i4"]
    assert f"skipped 2 bad line(s) in {d / 'item_plain_text.txt'} (first: line 2: not UTF-8" in caplog.text
    assert f"skipped 3 bad line(s) in {d / 'user_sequence.txt'} (first: line 2: user 'u2': item 'i2' has no text" in caplog.text
    assert main(["data", "prepare", "idgenrec", str(d), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().endswith("item_plain_text.txt:2: not UTF-8 (byte 0xe9 at column 14)")
    assert main(["data", "prepare", "idgenrec", str(d), "--out", str(tmp_path / "out"), "--skip-bad-lines"]) == 0


def test_id_table_bad_input(tmp_path):
    from idgen.idtable import IdTable

    path = tmp_path / "ids.tsv"
    path.write_bytes(b"# idgenrec idtable version=1\r\ni1\tred shoe\r\ni2\tcaf\xe9\n")
    with pytest.raises(DataError, match=r"ids\.tsv:3: not UTF-8 \(byte 0xe9 at column 7\)"):
        IdTable.load(path)
    path.write_bytes(b"# idgenrec idtable version=x\ni1\tred shoe\r\n")
    with pytest.raises(DataError, match=r"ids\.tsv:1: header has no integer version"):
        IdTable.load(path)
    path.write_bytes(b"# idgenrec idtable version=2\ni1\tred shoe\r\n")
    (tmp_path / "ids.report.json").write_text("[1]")
    with pytest.raises(DataError, match=r"ids\.report\.json: malformed report"):
        IdTable.load(path)
    (tmp_path / "ids.report.json").unlink()
    table = IdTable.load(path)
    assert table.ids == {"i1": "red shoe"} and table.version == 2
