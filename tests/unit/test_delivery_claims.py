"""The claim decision (notifi.claims): tokens name an instance and a run of it; a claimant of
the same instance in another run takes a claim over (its predecessor died with the job in
flight), anyone else waits for the lease; a delivered mark wins over everything."""

from __future__ import annotations

import pytest

from notifi.claims import Claim, decide, job_token, takes_over, token_owner

OLD = job_token("pod-0", "aaaa", "n.deliveries", 3, 17)
NEW = job_token("pod-0", "bbbb", "n.deliveries", 3, 17)
OTHER = job_token("pod-1", "cccc", "n.deliveries", 3, 17)


def test_a_token_names_the_instance_and_its_run() -> None:
    assert OLD == "pod-0/aaaa:n.deliveries:3:17"
    assert token_owner(OLD) == ("pod-0", "aaaa")


@pytest.mark.parametrize(
    "instance_id", ["pod-0", "notifi-delivery-2", "a/b", "host:8080", "x/y:z", "ünïcode"]
)
def test_any_instance_id_parses_back(instance_id: str) -> None:
    assert token_owner(job_token(instance_id, "c0ffee", "p.deliveries", 0, 9)) == (
        instance_id,
        "c0ffee",
    )


@pytest.mark.parametrize("token", ["token-1", "job-token", "a:b:c", "", "x:t:0:1"])
def test_tokens_of_another_shape_have_no_owner(token: str) -> None:
    assert token_owner(token) is None
    assert not takes_over(token, NEW) and not takes_over(NEW, token)


def test_the_same_instance_in_another_run_takes_over() -> None:
    assert takes_over(OLD, NEW)
    assert decide(OLD, NEW, delivered=False) is Claim.CLAIMED


def test_another_instance_waits_for_the_lease() -> None:
    assert not takes_over(OLD, OTHER)
    assert decide(OLD, OTHER, delivered=False) is Claim.BUSY


def test_the_same_run_does_not_take_over_another_copy_of_a_job() -> None:
    """Two copies of one job in one live process: the second must not send alongside."""
    copy = job_token("pod-0", "aaaa", "n.deliveries", 5, 2)
    assert not takes_over(OLD, copy)
    assert decide(OLD, copy, delivered=False) is Claim.BUSY


def test_a_holder_finds_its_own_claim_and_a_free_claim_is_taken() -> None:
    assert decide(OLD, OLD, delivered=False) is Claim.CLAIMED
    assert decide(None, OTHER, delivered=False) is Claim.CLAIMED


@pytest.mark.parametrize("holder", [None, OLD, OTHER])
def test_delivered_wins(holder: str | None) -> None:
    assert decide(holder, NEW, delivered=True) is Claim.DELIVERED
