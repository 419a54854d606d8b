"""The waiting room in the browser: a place and an ETA, then on to where the user was going.

The server admits two requests a second (a pinned rate) and holds a request open for at
most a second (the default, 4 s, would absorb the whole line at that rate), and a few
registrations from other clients fill the line first, so the browser's own request must
wait.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from emeterai.pdf.samples import letter_a4
from tests.api.conftest import Server
from tests.web.conftest import looked_at, server_on
from tests.web.test_browser import (
    PASSWORD,
    click_at,
    confirm_and_download,
    grant,
    placed,
    register,
    stamp_box_pt,
    upload,
)

OTHERS_WAITING = 16


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def web_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from server_on(
        request,
        tmp_path_factory,
        EMETERAI_ADMISSION_RATE_PER_S="2",
        EMETERAI_ADMISSION_HOLD_S="1",
    )


def test_status_page(page: Page, axe: str) -> None:
    page.goto("/status")
    expect(page.get_by_role("heading", name="Status layanan", exact=True)).to_be_visible()
    expect(page.locator("#queue-length")).to_have_text(re.compile(r"^\d+$"))
    looked_at(page, "status", axe)


def fill_the_line(server: Server) -> None:
    """Registrations from other people, each with their own session, all at once."""

    def other_person(_: int) -> int:
        return httpx.post(f"{server.base_url}/register", data={}, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        assert 429 in list(pool.map(other_person, range(OTHERS_WAITING)))


def test_queue_page_shows_a_place_then_lets_the_user_through(
    page: Page, web_server: Server, axe: str
) -> None:
    fill_the_line(web_server)
    page.goto("/register")
    page.get_by_label("Alamat e-mail").fill(f"antre-{uuid.uuid4().hex[:8]}@example.id")
    page.get_by_label("Kata sandi").fill(PASSWORD)
    # A real form post meets the line: 303 to the queue page, the ticket in a cookie.
    page.get_by_role("button", name="Daftar").click()
    page.wait_for_url(re.compile(r"/antrean\?next=%2Fregister$"))
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


def test_a_queued_confirmation_comes_back_to_the_chosen_spot(
    page: Page, web_server: Server, tmp_path: Path
) -> None:
    email = register(page)
    grant(web_server, email, 1)
    original = letter_a4()
    upload(page, "surat.pdf", original)
    expect(page.locator("#stamp-box")).to_be_visible()
    click_at(page, 0.3, 0.6)
    chosen = placed(page)
    assert chosen != (0.0, 0.0)
    # The pass from registering is dropped (as if it had expired), and the line is long.
    page.context.clear_cookies(name=re.compile(r"^emeterai_(ticket|session)$"))
    fill_the_line(web_server)
    page.get_by_role("button", name="Konfirmasi dan bubuhkan").click()  # a real form post
    page.wait_for_url(re.compile(r"/antrean\?next="))
    expect(page.get_by_role("heading", name="Anda dalam antrean")).to_be_visible()
    # Admitted: back on the placement page with the same spot, marker and fields.
    page.wait_for_url(re.compile(r"/stamp/[^/?]+\?"), timeout=30_000)
    expect(page.locator("#stamp-box")).to_be_visible()
    assert placed(page) == chosen
    box = page.locator("#stamp-box").bounding_box()
    image = page.locator("#page-image").bounding_box()
    assert box is not None and image is not None
    scale = image["width"] / 595.28
    assert abs((box["x"] - image["x"]) / scale - chosen[0]) < 1.5
    assert abs((image["y"] + image["height"] - box["y"] - box["height"]) / scale - chosen[1]) < 1.5
    stamped = confirm_and_download(page, tmp_path, "surat-bermeterai.pdf")
    left, bottom, _width, _height = stamp_box_pt(original, stamped)
    assert abs(left - chosen[0]) < 1.5 and abs(bottom - chosen[1]) < 1.5, (left, bottom, chosen)
