"""`--env NOTIFI_X__Y=value`, as `make bench` and `make chaos` take it: a setting for every role
of the run, checked when the command line is read."""

from __future__ import annotations

import argparse
import re

# What notifi.settings reads from the environment: NOTIFI_<SECTION>__<KEY>, any case, deeper
# keys for tables (a named destination's name may hold a hyphen: NOTIFI_DESTINATIONS__OPS-ONCALL).
_NAME = re.compile(r"NOTIFI_[A-Za-z0-9_-]+(?:__[A-Za-z0-9_-]+)+")


def setting(item: str) -> tuple[str, str]:
    """An argparse `type`: `NOTIFI_SECTION__KEY=value` as (name, value)."""
    name, sep, value = item.partition("=")
    if not sep or not _NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"{item!r}: expected NOTIFI_<SECTION>__<KEY>=value, e.g. NOTIFI_API__ACCEPT_LINGER_MS=8"
        )
    return name, value


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=setting,
        metavar="NOTIFI_X__Y=value",
        help="a setting for every role (repeat)",
    )
