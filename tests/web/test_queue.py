"""The waiting room in the browser: a place and an ETA, then on to where the user was going.

The server admits two requests a second (a pinned rate), and a few registrations from
other clients fill the line first, so the browser's own request must wait.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.api.conftest import Server
from tests.web.conftest import looked_at, server_on
from tests.web.test_browser import PASSWORD

OTHERS_WAITING = 16


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def web_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from server_on(request, tmp_path_factory, EMETERAI_ADMISSION_RATE_PER_S="2")


def test_status_page(page: Page, axe: str) -> None:
    page.goto("/status")
    expect(page.get_by_role("heading", name="Status layanan", exact=True)).to_be_visible()
    expect(page.locator("#queue-length")).to_have_text(re.compile(r"^\d+$"))
    looked_at(page, "status", axe)


def test_queue_page_shows_a_place_then_lets_the_user_through(
    page: Page, web_server: Server, axe: str
) -> None:
    def other_person(_: int) -> int:  # each with their own session, all at once
        return httpx.post(f"{web_server.base_url}/register", data={}, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        assert 429 in list(pool.map(other_person, range(OTHERS_WAITING)))
    page.goto("/register")
    # The browser's registration meets the line: 429 QUEUED with a ticket in a cookie.
    answer = page.evaluate(
        """async () => {
            const response = await fetch('/register', {method: 'POST', body: new FormData()});
            return {status: response.status, body: await response.json()};
        }"""
    )
    assert answer["status"] == 429 and answer["body"]["code"] == "QUEUED", answer
    # Where the waiting room sends a browser (see docs/web.md): the queue page.
    page.goto("/antrean?next=/register")
    expect(page.get_by_role("heading", name="Anda dalam antrean")).to_be_visible()
    position = int(page.locator("#queue-position").inner_text().replace(".", ""))
    assert position >= 1
    looked_at(page, "queue", axe)
    # It updates by itself and, when admitted, carries the user on: no click, no reload.
    page.wait_for_url(re.compile(r"/register$"), timeout=30_000)
    email = f"antre-{uuid.uuid4().hex[:8]}@example.id"
    page.get_by_label("Alamat e-mail").fill(email)
    page.get_by_label("Kata sandi").fill(PASSWORD)
    page.get_by_role("button", name="Daftar").click()
    expect(page.get_by_role("heading", name="Meterai saya")).to_be_visible()
