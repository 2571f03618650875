"""``idgenrec data stats``: the table and JSON, on synthetic data and on the shared Beauty dataset."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from idgenrec.cli import main

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def table(out: str) -> dict[str, str]:
    """Rows of the stats table (after its title line): label -> value."""
    return {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in out.splitlines()[1:]}


def test_stats_table_and_json(synth_dir, synth_dataset, capsys):
    assert main(["data", "stats", str(synth_dir)]) == 0
    rows = table(capsys.readouterr().out)
    stats = synth_dataset.stats()
    assert rows == {
        "users": f"{stats['users']:,}",
        "items": f"{stats['items']:,}",
        "interactions": f"{stats['interactions']:,}",
        "density": f"{100 * stats['density']:.4f}%",
        "mean seq. length": f"{stats['mean_seq_len']:.2f}",
        "median seq. length": f"{stats['median_seq_len']:g}",
    }
    assert main(["data", "stats", str(synth_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": synth_dir.name, **stats}


def test_stats_missing_folder_exit_code(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "nope")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


@pytest.mark.realdata
def test_beauty_numbers(capsys):
    beauty = DATASETS / "derived" / "Beauty"
    if not beauty.exists():
        pytest.skip("shared datasets not available")
    assert main(["data", "stats", str(beauty)]) == 0
    lines = table(capsys.readouterr().out)
    assert lines["users"] == "22,363" and lines["items"] == "12,101"
    assert lines["interactions"] == "198,502" and lines["density"] == "0.0734%"
