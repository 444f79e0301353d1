"""Interleaved before/after pairs of `make bench`: a commit (`--before`, run as a snapshot) and
the working tree (or `--after REV`), one after the other, `--pairs` times, the order swapped in
every other pair so that a machine growing busier or quieter during the run does not favour one
side. Each run is one mode; the bench's own arguments follow `--`. Prints every run's figures
and, per measure, each side's mean and range and how many pairs the after side won.

    python -m bench.pairs --before 12ddfea --pairs 4 -- --phases steady --modes embedded
    python -m bench.pairs --before 12ddfea --after HEAD -- --phases steady,closed --modes split

On this machine one run's CPU per webhook moves by up to a tenth from the next (2026-12-07),
so a change smaller than that shows only as a count of pairs won, never as one run.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.__main__ import parse_args
from tests.support.process import ROOT

# The bench table's rows read here (the label's start, as every snapshot since 2026-12-06
# prints it) and whether a lower figure is the better one.
CPU_WHOLE = "CPU ms per delivered webhook"
MEASURES: dict[str, bool] = {
    "CPU ms/webhook": True,
    "p50 ms": True,
    "p99 ms": True,
    "202 p99 ms": True,
    "spread p99 ms": True,
    "instant last s": True,
    "closed /s": False,
    "wrk POSTs/s": False,
}
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _numbers(cell: str) -> list[float]:
    return [float(n.replace(",", "")) for n in _NUMBER.findall(cell)]


def figures(table: str) -> dict[str, float]:
    """The measures of a one-mode bench table (what it printed to stdout); a measure the run
    did not take ("n/a", "not run") is left out."""
    out: dict[str, float] = {}
    for line in table.splitlines():
        name, sep, rest = line.partition(" | ")
        if not sep:
            continue
        value = rest.split(" | ")[0].strip()
        got = _numbers(value) if value not in ("", "n/a", "not run") else []
        if not got:
            continue
        if CPU_WHOLE in name:
            out["CPU ms/webhook"] = got[0]
        elif name.startswith("  CPU ms per webhook: "):
            out["CPU: " + name.removeprefix("  CPU ms per webhook: ").strip()] = got[0]
        elif "accept->arrival p50 / p99" in name and len(got) == 2:
            out["p50 ms"], out["p99 ms"] = got
        elif name.strip().startswith("accept (202) p99"):
            out["202 p99 ms"] = got[0]
        elif name.startswith("spread schedules") and len(got) >= 2:
            out["spread p99 ms"] = got[1]
        elif name.startswith("all due at one instant") and len(got) >= 2:
            out["instant last s"] = got[1]
        elif name.startswith("closed loop"):
            out["closed /s"] = got[0]
        elif name.startswith("wrk single POSTs"):
            out["wrk POSTs/s"] = got[0]
    return out


@dataclass
class Side:
    name: str
    runs: list[dict[str, float]] = field(default_factory=list)

    def values(self, measure: str) -> list[float]:
        return [r[measure] for r in self.runs if measure in r]


def lower_is_better(measure: str) -> bool:
    return MEASURES.get(measure, True)  # the per-process CPU rows too


def _figure(value: float, digits: str = ".3g") -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else format(value, digits)


def _spread(values: list[float]) -> str:
    low, high = _figure(min(values)), _figure(max(values))
    return f"{_figure(statistics.fmean(values), '.3f')} ({low}-{high})"


def summary(before: Side, after: Side) -> str:
    """Per measure: each side's mean and range, and the pairs the after side won."""
    names = [m for m in {**before.runs[0], **after.runs[0]} if before.values(m) and after.values(m)]
    lines = [f"{'measure':<28} {before.name:>26} {after.name:>26}  after better in"]
    for m in names:
        # A pair counts where both of its runs took the measure.
        pairs = [
            (a[m], b[m]) for b, a in zip(before.runs, after.runs, strict=True) if m in a and m in b
        ]
        won = sum((x < y) if lower_is_better(m) else (x > y) for x, y in pairs)
        b, a = before.values(m), after.values(m)
        lines.append(f"{m:<28} {_spread(b):>26} {_spread(a):>26}  {won} of {len(pairs)}")
    return "\n".join(lines)


def run_bench(commit: str | None, bench_args: Sequence[str]) -> tuple[str, dict[str, float]]:
    argv = [sys.executable, "-m", "bench", *bench_args]
    if commit is not None:
        argv += ["--commit", commit]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: a broken promise, still a table to read
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout, figures(done.stdout)


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this command's arguments, the bench's: those after `--`)."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def main(argv: list[str]) -> int:
    ours, bench_args = split_argv(argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.pairs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--before", required=True, help="the commit measured first in pair 1")
    parser.add_argument("--after", help="a commit (default: the working tree)")
    parser.add_argument("--pairs", type=int, default=4, choices=range(1, 21), metavar="1-20")
    args = parser.parse_args(ours)
    bench = parse_args(bench_args)  # the bench's own parser: its mistakes show before any run
    if len(bench.modes) != 1 or bench.commit:
        parser.error("give the bench one mode and no --commit after --: -- --modes embedded")
    before = Side(f"before {args.before}")
    after = Side(f"after {args.after or 'working tree'}")
    for i in range(args.pairs):
        order = [(before, args.before), (after, args.after)]
        for side, commit in order if i % 2 == 0 else order[::-1]:
            text, got = run_bench(commit, bench_args)
            side.runs.append(got)
            header = text.splitlines()[0] if text else "(no table)"
            shown = ", ".join(f"{k} {v:,.3f}" for k, v in got.items())
            print(f"pair {i + 1}, {side.name}: {header}\n  {shown}", flush=True)
    print()
    print(summary(before, after))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
