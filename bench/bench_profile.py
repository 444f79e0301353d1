"""Summarises a py-spy `--format raw` profile (collapsed stacks, "f1;f2;... count"): shares of
samples by the innermost frame (self), by function anywhere on the stack (inclusive), and by
the package of the innermost frame.

    python -m bench.bench_profile bench/results/profile.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def parse(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def function(frame: str) -> str:
    """'name (path/file.py:12)' -> 'name (path/file.py)': lines of one function together."""
    m = FRAME.match(frame)
    return f"{m['func']} ({m['file']})" if m else frame


def package(frame: str) -> str:
    m = FRAME.match(frame)
    path = m["file"] if m else frame
    parts = path.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    return parts[0] if len(parts) > 1 else path


def summarise(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(c for _, c in stacks) or 1
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for frames, count in stacks:
        leaf[function(frames[-1])] += count
        packages[package(frames[-1])] += count
        for f in {function(f) for f in frames}:
            inclusive[f] += count
    out = [f"{total} samples"]
    for title, counter in (
        ("innermost package", packages),
        ("innermost function (self)", leaf),
        ("function anywhere on the stack (inclusive)", inclusive),
    ):
        out.append(f"\n{title}:")
        out += [f"  {100 * c / total:5.1f} %  {name}" for name, c in counter.most_common(top)]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print(summarise(parse(Path(args.profile).read_text()), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
