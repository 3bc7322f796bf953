"""The benchmark harness's own arithmetic: hey's CSV and the verdicts of the results table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.load import parse_csv
from bench.report import MET, MISSED, UNSETTLED, Report, difference_row, ratio_row

HEY_CSV = """response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
0.0100,0.0001,0.0000,0.0000,0.0098,0.0001,200,0.0000
0.0300,0.0001,0.0000,0.0000,0.0298,0.0001,200,0.0050
0.0200,0.0001,0.0000,0.0000,0.0198,0.0001,503,0.0400
"""


def test_hey_csv_counts_missing_and_failed_answers() -> None:
    result = parse_csv(HEY_CSV, requested=4)

    assert result.latencies_ms == pytest.approx([10.0, 20.0, 30.0])
    assert result.p50 == pytest.approx(20.0)
    assert result.p95 == pytest.approx(30.0)  # nearest rank: the 3rd of 3
    assert result.errors == 2  # one request without a response, one 503
    assert result.elapsed_s == pytest.approx(0.06)  # the 503 started at 40 ms and took 20 ms
    assert result.throughput == pytest.approx(50.0)


def test_hey_csv_without_rows_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no response to any of 5 requests"):
        parse_csv(HEY_CSV.splitlines()[0] + "\n", requested=5)


@pytest.mark.parametrize(
    ("ours", "verdict"),
    [
        ([90.0, 95.0, 85.0], MET),  # every repetition at least 0.8
        ([70.0, 75.0, 60.0], MISSED),  # every repetition below 0.8
        ([90.0, 70.0, 85.0], UNSETTLED),  # the range crosses 0.8
    ],
)
def test_ratio_verdict_needs_whole_range(ours: list[float], verdict: str) -> None:
    row = ratio_row("s", "q", {"on": ours, "off": [100.0, 100.0, 100.0]}, at_least=0.8)

    assert row.verdict == verdict


def test_ratio_pairs_repetitions_in_order() -> None:
    row = ratio_row("s", "q", {"on": [50.0, 90.0], "off": [100.0, 90.0]})

    assert row.pairs == [0.5, 1.0]
    assert row.result == pytest.approx(0.75)


def test_difference_notes_sign_change() -> None:
    row = difference_row("s", "q", {"on": [10.0, 12.0], "off": [11.0, 11.0]}, at_most=1.0)

    assert row.pairs == [-1.0, 1.0]
    assert row.verdict == MET
    assert "changes sign" in row.note


def test_saved_run_renders_same_tables(tmp_path: Path) -> None:
    report = Report()
    report.add(ratio_row("route", "throughput", {"on": [90.0], "off": [100.0]}), log=print)
    json_path, markdown_path = report.save(tmp_path)  # no latencies, so no plot

    again = Report.from_json(json.loads(json_path.read_text()))

    assert again.to_markdown() == markdown_path.read_text()
    assert "### route" in again.to_markdown()
    assert "| throughput | on: 90.0 req/s | off: 100.0 req/s | 0.900 |" in again.to_markdown()
