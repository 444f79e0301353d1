"""The supervisor's flags: how they become a process's plan (partition range, instance id)."""

from __future__ import annotations

import os
import socket

import pytest

from notifi.settings import SettingsError
from supervisor import build


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("NOTIFI_")] + ["HOSTNAME"]:
        monkeypatch.delenv(name, raising=False)  # the file's defaults, whatever the shell has


def test_replica_flags_choose_a_slice_of_the_keys() -> None:
    _, _, plan = build(["--replica-index", "1", "--replica-count", "4"])
    assert plan.partitions == (256, 511)
    _, _, plan = build(["--partitions", "10-20"])
    assert plan.partitions == (10, 20)
    _, _, plan = build([])
    assert plan.partitions == (0, 1023)


def test_instance_id_from_flag_then_hostname_env_then_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert build(["--instance-id", "delivery-7"])[2].instance_id == "delivery-7"
    assert build([])[2].instance_id == socket.gethostname()
    monkeypatch.setenv("HOSTNAME", "pod-abc")
    assert build([])[2].instance_id == "pod-abc"


def test_empty_instance_id_is_refused() -> None:
    with pytest.raises(SettingsError, match="--instance-id"):
        build(["--instance-id", " "])
