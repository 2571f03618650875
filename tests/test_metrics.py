"""HR@k / NDCG@k against hand-computed rankings."""
import math

import pytest

from genrec.metrics import hr_ndcg, target_rank


def test_hand_computed_values():
    ranked = [
        ["a", "b", "c", "d", "e", "f"],  # target at rank 0
        ["x", "y", "t", "z"],  # rank 2
        ["1", "2", "3", "4", "5", "6", "7", "t2"],  # rank 7: only counts at k=10
        ["p", "q"],  # miss
    ]
    targets = ["a", "t", "t2", "absent"]
    m = hr_ndcg(ranked, targets, ks=(1, 5, 10))
    assert m["HR@1"] == pytest.approx(1 / 4)
    assert m["NDCG@1"] == pytest.approx(1 / 4)
    assert m["HR@5"] == pytest.approx(2 / 4)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["HR@10"] == pytest.approx(3 / 4)
    assert m["NDCG@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(9)) / 4)


def test_defaults_and_perfect_ranking():
    m = hr_ndcg([[1, 2], [2, 1]], [1, 2])
    assert set(m) == {"HR@5", "NDCG@5", "HR@10", "NDCG@10"}
    assert all(v == pytest.approx(1.0) for v in m.values())


def test_target_rank_and_errors():
    assert target_rank(["a", "b"], "b") == 1
    assert target_rank(["a"], "z") is None
    with pytest.raises(ValueError, match="targets"):
        hr_ndcg([["a"]], ["a", "b"])
    with pytest.raises(ValueError, match="no users"):
        hr_ndcg([], [])
    with pytest.raises(ValueError, match="cut-offs"):
        hr_ndcg([["a"]], ["a"], ks=(0,))
