"""The bench's own arithmetic: /proc CPU accounting, wrk's report, py-spy summaries, the table,
what a snapshot run (`--commit`) passes on, and the settings `--env` takes."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os

import pytest

from bench import load, overrides
from bench.__main__ import table
from bench.bench_cpu import TICKS_PER_S, CpuWindow, read_stat
from bench.bench_phases import Results, pct
from bench.bench_profile import parse, summarise
from bench.bench_wrk import WrkResult
from bench.bench_wrk import parse as parse_wrk
from bench.chaos import with_results_path
from bench.load import Sent
from bench.snapshot import run_snapshot, without_commit
from bench.stages import stages
from tests.support.process import ROOT

WRK_OUTPUT = """Running 4s test @ http://127.0.0.1:8080/api/notifications
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    60.12ms   20.00ms 200.00ms   70.00%
  Latency Distribution
     50%   59.50ms
     75%   70.00ms
     90%   90.00ms
     99%  150.40ms
  4220 requests in 4.00s, 1.20MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:   1055.00
Transfer/sec:    300.00KB
"""


def test_wrk_report_is_read() -> None:
    assert parse_wrk(WRK_OUTPUT) == (4220, 1055.0, 7, 3, 59.5, 150.4)


def test_own_process_stat_is_read() -> None:
    stat = read_stat(os.getpid())
    assert stat is not None and stat.cpu_ticks >= 0
    assert read_stat(2**22 + 1) is None  # above pid_max: no such process


async def test_cpu_window_charges_a_busy_process() -> None:
    async def me() -> dict[str, list[int]]:
        return {"me": [os.getpid()]}

    window = CpuWindow(me, period_s=0.05)
    start = read_stat(os.getpid())
    assert start is not None
    await window.start()
    loop = asyncio.get_running_loop()
    began, deadline = loop.time(), loop.time() + 30  # a loaded machine gives us little
    while loop.time() < deadline:  # burn 0.2 s of CPU, yielding to the sampler now and then
        sum(range(20_000))
        now = read_stat(os.getpid())
        assert now is not None
        if now.cpu_ticks - start.cpu_ticks >= 0.2 * TICKS_PER_S:
            break
        await asyncio.sleep(0)
    seconds = await window.stop()
    assert 0.15 <= seconds["me"] <= loop.time() - began + 0.05


def test_profile_summary_shares() -> None:
    raw = "main (a.py:1);f (pkg/b.py:2) 3\nmain (a.py:1);g (pkg/c.py:9) 1\n"
    text = summarise(parse(raw), top=5)
    assert "4 samples" in text
    assert "75.0 %  f (pkg/b.py)" in text
    assert "100.0 %  main (a.py)" in text


def test_a_load_generator_runs_without_collector_pauses() -> None:
    """The generator's phase runs with the cycle collector off (its full collections paused it
    for up to 118 ms in a steady run), and the process gets it back afterwards."""

    async def during() -> tuple[bool, int]:
        return gc.isenabled(), gc.get_freeze_count()

    assert gc.isenabled()
    enabled, frozen = load._run(during())
    assert (enabled, frozen > 0) == (False, True)
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_percentiles() -> None:
    assert pct([], 0.5) != pct([], 0.5)  # nan
    assert pct([float(i) for i in range(100)], 0.99) == 99.0


def test_table_shows_every_mode_and_broken_promises() -> None:
    r = Results(cpu_s={"notifi": 4.0, "postgres backends": 1.0, "redis": 0.5, "tansu broker": 2})
    r.steady_delivered = 10_000
    r.lost = {"steady": 0, "spread": 2}
    r.wrk = WrkResult(4000, 1000.0, 0, 0, 50.0, 100.0, 0.1, 4.0)
    text = table({"embedded": r, "split": Results()}, 1000.0, "machine", "sizes")
    header = text.splitlines()[3]
    assert "embedded" in header and "split" in header and "target" in header
    line = next(x for x in text.splitlines() if "(service + Postgres + Redis)" in x)
    assert "0.550" in line  # (4 + 1 + 0.5) s over 10,000 webhooks, broker left out
    assert "0.750" in next(x for x in text.splitlines() if "plus the broker" in x)
    assert "2 (spread 2)" in next(x for x in text.splitlines() if x.startswith("lost"))


def test_split_stages_follow_one_notification_from_intent_to_arrival() -> None:
    sent = [Sent("p:0", 100.0, 100.012, 202), Sent("p:1", 101.0, 101.01, 202)]
    rows = {"p:0": {"created": 100.002, "routed": 100.030, "started": 100.055}}
    out = stages(sent, rows, {"p:0": 100.058, "p:1": 101.05})  # p:1 was never read back
    got = {name: [round(v * 1000, 1) for v in values] for name, values in out.items()}
    assert got == {
        "accept": [2.0],
        "route": [28.0],
        "attempt": [25.0],
        "send": [3.0],
        "total": [58.0],
        "answer": [12.0],
    }


def test_a_snapshot_run_gets_the_arguments_without_commit() -> None:
    assert without_commit(["--quick", "--commit", "826d13a", "--modes", "split"]) == [
        "--quick",
        "--modes",
        "split",
    ]
    assert without_commit(["--commit=HEAD~1", "--json", "x.json"]) == ["--json", "x.json"]
    assert without_commit(["--quick"]) == ["--quick"]


def test_a_snapshot_of_no_commit_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_snapshot("bench", "no-such-commit-0000", ["--quick"]) == 2
    assert "--commit: no commit 'no-such-commit-0000'" in capsys.readouterr().err


def test_a_chaos_snapshot_writes_its_results_into_this_checkout() -> None:
    argv = with_results_path(["--quick", "--scenario", "none"])
    assert argv[:4] == ["--quick", "--scenario", "none", "--json"]
    assert argv[4].startswith(str(ROOT / "bench" / "results" / "chaos-"))
    assert argv[4].endswith("-quick.json")
    assert with_results_path(["--json=x.json"]) == ["--json=x.json"]


@pytest.mark.parametrize(
    "item, expected",
    [
        ("NOTIFI_API__ACCEPT_LINGER_MS=8", ("NOTIFI_API__ACCEPT_LINGER_MS", "8")),
        (
            'NOTIFI_DELIVERY__ALLOWED_NETWORKS=["127.0.0.0/8"]',
            ("NOTIFI_DELIVERY__ALLOWED_NETWORKS", '["127.0.0.0/8"]'),
        ),
        ("NOTIFI_KAFKA__TOPIC_PREFIX=a=b", ("NOTIFI_KAFKA__TOPIC_PREFIX", "a=b")),
        ("NOTIFI_LOG__LEVEL=", ("NOTIFI_LOG__LEVEL", "")),
        ("NOTIFI_api__port=9", ("NOTIFI_api__port", "9")),
        ("NOTIFI_DESTINATIONS__OPS-ONCALL={}", ("NOTIFI_DESTINATIONS__OPS-ONCALL", "{}")),
    ],
)
def test_a_setting_override_is_read_as_name_and_value(item: str, expected: tuple[str, str]) -> None:
    assert overrides.setting(item) == expected


@pytest.mark.parametrize(
    "item",
    [
        "NOTIFI_API__ACCEPT_LINGER_MS",
        "API__ACCEPT_LINGER_MS=8",
        "NOTIFI_API=8",
        "notifi_api__x=1",
        "=8",
    ],
)
def test_a_malformed_setting_override_is_refused_on_the_command_line(
    item: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="bench")
    overrides.add_argument(parser)
    assert parser.parse_args(["--env", "NOTIFI_LOG__LEVEL=debug"]).env == [
        ("NOTIFI_LOG__LEVEL", "debug")
    ]
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--env", item])
    assert exited.value.code == 2
    assert "expected NOTIFI_<SECTION>__<KEY>=value" in capsys.readouterr().err
