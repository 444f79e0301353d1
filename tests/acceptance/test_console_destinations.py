"""The console's stored destinations pages in a real headless browser, as test_console.py drives
the notifications pages (its process starter, browser, screenshots and waiting helpers):
`supervisor.py --roles all` as a process, a loopback receiver that fails one destination, and
every action through the buttons, checked against the API's own state."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.acceptance import test_console as console
from tests.support.receiver import Receiver
from tests.support.stored_destinations import stored

By = console.By
find, text, until = console.find, console.text, console.until
# test_console's fixtures, under their own names so pytest finds them here too.
browser, shots = console.browser, console.shots

OWNER, VIEWER = "console-dest", "console-dest-viewer"
SECRETS = {OWNER: "owner-secret", VIEWER: "viewer-secret"}


def clients_env() -> str:
    entries = []
    for cid, secret in SECRETS.items():
        digest = hashlib.sha256(secret.encode()).hexdigest()
        extra = ", read_only = true" if cid == VIEWER else ""
        entries.append(f'{{id = "{cid}", secret_sha256 = "{digest}"{extra}}}')
    return f"[{', '.join(entries)}]"


def headers(cid: str) -> dict[str, str]:
    return {"CF-Access-Client-Id": cid, "CF-Access-Client-Secret": SECRETS[cid]}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    # "flaky" refuses the first two deliveries (400 ends them failed), then takes the rest.
    r = await Receiver(script={"flaky": [400, 400, 200]}).start()
    yield r
    await r.stop()


async def call(api: str, method: str, path: str, body: Any = None, who: str = OWNER) -> Any:
    async with (
        aiohttp.ClientSession(headers=headers(who)) as http,
        http.request(method, api + path, json=body) as r,
    ):
        return r.status, (await r.json() if r.content_length != 0 else None)


async def create(api: str, body: dict[str, Any]) -> dict[str, Any]:
    status, doc = await call(api, "POST", "/api/destinations", body)
    assert status == 201, doc
    return doc


async def sign_in(driver: Any, cid: str) -> None:
    await until(lambda: find(driver, "#login").is_displayed(), "the credentials form")
    find(driver, "#client-id").clear()
    find(driver, "#client-id").send_keys(cid)
    find(driver, "#client-secret").send_keys(SECRETS[cid])
    find(driver, "#login button").click()
    await until(lambda: not find(driver, "#login").is_displayed(), "signed in")


def rows(driver: Any) -> dict[str, str]:
    found = driver.find_elements(By.CSS_SELECTOR, "table.destinations tbody tr")
    return {r.get_attribute("data-id"): r.text for r in found}


async def all_three(driver: Any) -> None:
    """The first page (the two newest), then the older one through the cursor."""
    await until(lambda: len(rows(driver)) == 2, "the first page")
    more = driver.find_element(By.XPATH, "//button[. = 'Load more']")
    await until(more.is_displayed, "Load more")
    more.click()
    await until(lambda: len(rows(driver)) == 3, "the three destinations")


def set_input(driver: Any, css: str, value: str) -> None:
    """A datetime-local value as a person's typing would leave it (input event included)."""
    driver.execute_script(
        "const el = document.querySelector(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input', {bubbles: true}));",
        css,
        value,
    )


async def test_console_destinations_pages(
    settings_env: dict[str, str], receiver: Receiver, browser: Any, shots: Callable, store: Any
) -> None:
    env = {
        **settings_env,
        "NOTIFI_AUTH__MODE": "tokens",
        "NOTIFI_AUTH__CLIENTS": clients_env(),
        "NOTIFI_API__DEFAULT_PAGE_SIZE": "2",  # the console's page: three destinations need two
    }
    proc, api = await console.start_notifi(env)
    try:
        flaky = await create(
            api,
            {
                "type": "webhook",
                "url": receiver.url("flaky"),
                "name": "flaky-hook",
                "topics": ["deploys"],
                "rate_limit": 5,
            },
        )
        good = await create(
            api, {"type": "webhook", "url": receiver.url("good"), "name": "good", "topics": "*"}
        )
        mail = await create(api, {"type": "email", "to": ["ops@example.com"], "name": "mail"})
        for n in range(2):
            status, _ = await call(
                api, "POST", "/api/notifications", {"body": f"deploy {n}", "topic": "deploys"}
            )
            assert status == 202

        async def stats(doc: dict[str, Any]) -> dict[str, Any]:
            return (await call(api, "GET", f"/api/destinations/{doc['id']}"))[1]["stats"]

        for doc, field in [(flaky, "failures_24h"), (good, "successes_24h")]:
            deadline = datetime.now(UTC) + timedelta(seconds=console.WAIT_S)
            while (await stats(doc))[field] < 2:
                assert datetime.now(UTC) < deadline, f"{doc['name']} {field}"
                await asyncio.sleep(0.2)

        # The list: each with its target, topics, state and 24 h health; no secret anywhere.
        browser.get(f"{api}/console/#/destinations")
        await sign_in(browser, OWNER)
        await all_three(browser)
        shown = rows(browser)
        assert "0% ok of 2 attempts" in shown[flaky["id"]], shown
        assert receiver.url("flaky") in shown[flaky["id"]] and "5/s" in shown[flaky["id"]]
        assert "100% ok of 2 attempts" in shown[good["id"]] and "every topic" in shown[good["id"]]
        assert "ops@example.com" in shown[mail["id"]] and "no attempts" in shown[mail["id"]]
        assert "enabled" in shown[flaky["id"]]
        assert flaky["secret"] not in browser.page_source
        shots(browser, "destinations")
        browser.set_window_size(390, 844)  # a phone
        shots(browser, "destinations-phone")
        browser.set_window_size(1280, 1000)

        # Filters are the API's: topic deploys (good subscribes to "*"), then disabled ones.
        browser.execute_script("location.hash = '#/destinations?topic=deploys'")
        await until(lambda: set(rows(browser)) == {flaky["id"], good["id"]}, "deploys' two")
        browser.execute_script("location.hash = '#/destinations?enabled=false'")
        await until(lambda: "No destinations match." in text(browser, "main"), "none disabled")
        browser.execute_script("location.hash = '#/destinations'")
        await all_three(browser)

        # Disable, then enable, through the row's button.
        row = f'tr[data-id="{flaky["id"]}"]'
        find(browser, f"{row} button").click()
        await until(lambda: "disabled by the client" in text(browser, row), "the row disabled")
        _, doc = await call(api, "GET", f"/api/destinations/{flaky['id']}")
        assert doc["enabled"] is False and doc["disabled_at"]
        assert find(browser, f"{row} button").text == "Enable"
        find(browser, f"{row} button").click()
        await until(lambda: "disabled" not in text(browser, row), "the row enabled")
        live = find(browser, "#live")
        await until(lambda: "resume" in live.get_attribute("textContent"), "what enabling does")
        _, doc = await call(api, "GET", f"/api/destinations/{flaky['id']}")
        assert doc["enabled"] is True and doc["disabled_reason"] is None

        # Its page; rotation shows the new secret once.
        find(browser, f"{row} a").click()
        await until(lambda: find(browser, "#page-title").text == "flaky-hook", "its page")
        find(browser, '[data-action="rotate"]').click()
        browser.find_element(By.XPATH, "//button[. = 'Yes, rotate']").click()
        secret = await until(
            lambda: find(browser, "#new-secret").get_attribute("value"), "the new secret"
        )
        assert secret.startswith("whsec_") and secret != flaky["secret"]
        box = text(browser, ".secret-box")
        assert "Shown once" in box and "old secret keeps signing" in box
        kept = await store.pool.fetchrow(
            "SELECT secret, previous_secret FROM destinations WHERE id = $1::uuid", flaky["id"]
        )
        assert (kept["secret"], kept["previous_secret"]) == (secret, flaky["secret"])
        shots(browser, "destination-rotated")
        browser.refresh()
        await until(lambda: find(browser, "#page-title").text == "flaky-hook", "reloaded")
        assert secret not in browser.page_source
        assert not browser.find_elements(By.CSS_SELECTOR, "#new-secret")

        # Recover: the dry run counts the two failed deliveries and sends nothing...
        find(browser, "form.recover button[type=submit]").click()
        await until(
            lambda: "2 failed deliveries would be sent again" in text(browser, ".recover"),
            "the dry run's count",
        )
        assert receiver.count("flaky") == 2
        shots(browser, "destination-recover-count")
        # ...then the confirm re-drives them, once each (the receiver now answers 200).
        browser.find_element(By.XPATH, "//button[. = 'Send them again']").click()
        await until(
            lambda: "2 failed deliveries were sent again" in text(browser, ".recover"), "done"
        )
        await receiver.wait_for("flaky", 4, timeout_s=console.WAIT_S)
        await until(lambda: "2\nsucceeded" in text(browser, ".tiles"), "the health updated")
        assert receiver.count("flaky") == 4

        # Bad input is the API's problem, in the page's error style; nothing is counted.
        set_input(browser, "#recover-since", "2000-01-01T00:00")
        find(browser, "form.recover button[type=submit]").click()
        await until(
            lambda: "at most 14 days back" in text(browser, ".recover .error"), "the problem"
        )
        assert "would be sent" not in text(browser, ".recover")

        # Delete, with a confirm that says what is cancelled.
        find(browser, '[data-action="delete"]').click()
        assert "cancelled" in text(browser, ".confirm:not([hidden])")
        browser.find_element(By.XPATH, "//button[. = 'Yes, delete']").click()
        await until(lambda: find(browser, "#page-title").text == "Destinations", "the list")
        await until(lambda: set(rows(browser)) == {good["id"], mail["id"]}, "it is gone")
        assert (await call(api, "GET", f"/api/destinations/{flaky['id']}"))[0] == 404

        # A read-only client sees its destinations, and a refused change says why.
        theirs = str(await stored(store, VIEWER, name="viewers"))
        find(browser, "#sign-out").click()
        await sign_in(browser, VIEWER)
        browser.execute_script("location.hash = '#/destinations'")
        await until(lambda: set(rows(browser)) == {theirs}, "the viewer's one destination")
        find(browser, f'tr[data-id="{theirs}"] button').click()
        await until(lambda: "may only read" in text(browser, "#view .error"), "the 403")
        assert "Disable refused" in text(browser, "#view .error")
        _, doc = await call(api, "GET", f"/api/destinations/{theirs}", who=VIEWER)
        assert doc["enabled"] is True
        shots(browser, "destinations-read-only")

        # The only failed requests are the bad recover window's and the viewer's refusal.
        assert console.errors_in_log(browser, allow=lambda m: " 422 " in m or " 403 " in m) == []
        assert await proc.terminate() == 0, proc.output()
    finally:
        proc.kill()
