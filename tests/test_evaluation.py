import math

import pytest

from foveal.errors import InvalidInputError
from foveal.evaluation import evaluate, read_qrels, read_run, write_run


def test_metrics_by_hand(tmp_path):
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 2}}
    run = {"q1": {"x": 3.0, "a": 2.0, "y": 1.0}, "q2": {"z": 2.0, "c": 1.0}}
    scores = evaluate(qrels, run)
    # q1: one of two relevant docs at rank 2 -> DCG = 1/log2(3); IDCG = 1 + 1/log2(3)
    ndcg_q1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    # q2: graded 2 at rank 2 -> (2^2-1)/log2(3) / (2^2-1)
    ndcg_q2 = 1 / math.log2(3)
    assert scores["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-4)
    assert scores["recall@100"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["mrr@10"] == pytest.approx(0.5)


def test_missing_query_scores_zero():
    scores = evaluate({"q1": {"a": 1}, "q2": {"b": 1}}, {"q1": {"a": 1.0}})
    assert scores["ndcg@10"] == pytest.approx(0.5) and scores["queries"] == 2


def test_mrr_is_cut_at_10():
    run = {"q": {f"d{i}": 100.0 - i for i in range(20)}}
    assert evaluate({"q": {"d15": 1}}, run)["mrr@10"] == 0.0


def test_run_and_qrels_round_trip(tmp_path):
    path = tmp_path / "run.trec"
    write_run(path, {"q1": {"a": 0.5, "b": 0.9}})
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["q1", "Q0", "b", "1", "0.900000", "foveal"]
    assert read_run(path) == {"q1": {"b": 0.9, "a": 0.5}}
    qrels = tmp_path / "q.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tb\t1\n")
    assert read_qrels(qrels) == {"q1": {"b": 1}}


def test_bad_files_give_line_numbers(tmp_path):
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 a 1 0.5 t\nbroken line\n")
    with pytest.raises(InvalidInputError, match=":2:"):
        read_run(bad)
    with pytest.raises(InvalidInputError, match="no such"):
        read_qrels(tmp_path / "missing.tsv")
