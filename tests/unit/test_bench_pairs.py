"""bench.pairs: reading a bench table's figures, and the summary of interleaved pairs."""

from __future__ import annotations

import pytest

from bench.__main__ import table
from bench.bench_phases import Results
from bench.pairs import Side, figures, main, summary


def bench_table() -> str:
    """What `make bench` prints for one mode, from its own formatter."""
    r = Results(cpu_s={"notifi": 606.0, "redis": 39.0}, steady_delivered=1_000_000)
    r.steady_p50_ms, r.steady_p99_ms, r.steady_accept_p99_ms = 1008.4, 27.2, 14.8
    r.spread_p50_ms, r.spread_p99_ms = 1.4, 5.8
    r.closed_per_s = 2661.0  # the instant phase and wrk not run
    return table({"embedded": r}, 1000.0, "machine", "sizes")


def test_a_tables_figures_are_read_and_what_was_not_run_is_left_out() -> None:
    assert figures(bench_table()) == {
        "CPU ms/webhook": 0.645,
        "CPU: notifi": 0.606,
        "CPU: redis": 0.039,
        "p50 ms": 1008.4,
        "p99 ms": 27.2,
        "202 p99 ms": 14.8,
        "spread p99 ms": 5.8,
        "closed /s": 2661.0,
    }


def test_the_after_side_wins_a_pair_by_less_cpu_or_more_throughput() -> None:
    before = Side("before", [{"CPU ms/webhook": 1.0, "closed /s": 2000.0}] * 3)
    after = Side(
        "after",
        [
            {"CPU ms/webhook": 0.9, "closed /s": 2100.0},
            {"CPU ms/webhook": 1.1, "closed /s": 1900.0},
            {"CPU ms/webhook": 0.8, "closed /s": 2500.0},
        ],
    )
    lines = {
        line.split()[0] + line.split()[1]: line for line in summary(before, after).splitlines()
    }
    assert lines["CPUms/webhook"].endswith("2 of 3")
    assert "0.933 (0.8-1.1)" in lines["CPUms/webhook"]
    assert lines["closed/s"].endswith("2 of 3")


@pytest.mark.parametrize(
    "argv",
    [
        ["--before", "HEAD", "--", "--phases", "steady"],
        ["--before", "HEAD", "--", "--modes", "embedded,split"],
        ["--before", "HEAD", "--pairs", "0", "--", "--modes", "embedded"],
        ["--", "--modes", "embedded"],
        ["--before", "HEAD", "--", "--modes", "embedded", "--commit", "HEAD"],
        ["--before", "HEAD", "--", "--modes", "rq"],
    ],
)
def test_pairs_need_a_before_commit_and_one_mode(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
