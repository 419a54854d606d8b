"""End to end in Chromium: what an applicant and a verifier do, in Bahasa Indonesia."""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path

import pikepdf
import pypdfium2
from playwright.sync_api import Browser, Page, expect

from emeterai.pdf.samples import letter_a4
from tests.api.conftest import Server
from tests.pdf.conftest import make_pdf
from tests.web.conftest import looked_at, screenshot

PASSWORD = "kata sandi yang panjang"


def register(page: Page, axe: str | None = None) -> str:
    email = f"pelamar-{uuid.uuid4().hex[:8]}@example.id"
    page.goto("/register")
    if axe:
        looked_at(page, "register", axe)
    page.get_by_label("Alamat e-mail").fill(email)
    page.get_by_label("Kata sandi").fill(PASSWORD)
    page.get_by_role("button", name="Daftar").click()
    expect(page.get_by_role("heading", name="Meterai saya")).to_be_visible()
    return email


def grant(server: Server, email: str, count: int) -> None:
    added = server.cli("quota", "add", email, str(count), "--reference", f"web-{uuid.uuid4().hex}")
    assert added.returncode == 0, added.stderr


def buy(page: Page, count: int, axe: str | None = None) -> None:
    """Through the shop and the SANDBOX provider, as a user does."""
    page.goto("/buy")
    expect(page.locator("#sandbox-banner")).to_contain_text("SANDBOX")
    page.get_by_label("Jumlah meterai").fill(str(count))
    expect(page.locator("#total")).to_have_text(f"Rp{count * 10_000:,}".replace(",", "."))
    if axe:
        looked_at(page, "buy", axe)
    page.get_by_role("button", name="Pesan dan bayar").click()
    expect(page.locator("#order-status")).to_have_text("Menunggu pembayaran")
    if axe:
        looked_at(page, "order-awaiting", axe)
    page.get_by_role("button", name=re.compile(r"^Bayar Rp")).click()
    expect(page.locator("#order-status")).to_have_text("Sudah masuk saldo")
    expect(page.locator("#timeline li")).to_have_count(3)  # created, paid, credited
    if axe:
        looked_at(page, "order-credited", axe)


def upload(page: Page, name: str, document: bytes) -> None:
    page.goto("/stamp")
    page.get_by_label("Dokumen PDF").set_input_files(
        {"name": name, "mimeType": "application/pdf", "buffer": document}
    )
    page.get_by_role("button", name="Unggah dan lanjutkan").click()


def render_page(document: bytes, scale: float) -> tuple[int, int, bytes]:
    pdf = pypdfium2.PdfDocument(document)
    pdf.init_forms()  # the stamp is a signature widget: drawn with the form layer
    try:
        bitmap = pdf[0].render(
            scale=scale, rev_byteorder=True, draw_annots=True, may_draw_forms=True
        )
        return bitmap.width, bitmap.height, bytes(bitmap.buffer)
    finally:
        pdf.close()


def stamp_box_pt(before: bytes, after: bytes) -> tuple[float, float, float, float]:
    """Where the stamp landed, as the page is seen: (x, y, width, height) in points from
    the lower-left, found by comparing renders of the page before and after stamping."""
    scale = 2.0
    width, height, old = render_page(before, scale)
    width_after, height_after, new = render_page(after, scale)
    assert (width, height) == (width_after, height_after)
    stride = len(old) // height
    rows = [
        r
        for r in range(height)
        if old[r * stride : (r + 1) * stride] != new[r * stride : (r + 1) * stride]
    ]
    assert rows, "the stamp is not visible on the page"
    columns = [
        c
        for c in range(width)
        if any(
            old[r * stride + c * 3 : r * stride + c * 3 + 3]
            != new[r * stride + c * 3 : r * stride + c * 3 + 3]
            for r in rows[:: max(1, len(rows) // 40)]
        )
    ]
    left, right = min(columns) / scale, (max(columns) + 1) / scale
    top, bottom = min(rows) / scale, (max(rows) + 1) / scale
    page_height = height / scale
    return left, page_height - bottom, right - left, bottom - top


def click_at(page: Page, fraction_x: float, fraction_y: float) -> None:
    box = page.locator("#page-image").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * fraction_x, box["y"] + box["height"] * fraction_y)


def placed(page: Page) -> tuple[float, float]:
    return float(page.locator("#x").input_value()), float(page.locator("#y").input_value())


def confirm_and_download(page: Page, tmp_path: Path, name: str) -> bytes:
    page.get_by_role("button", name="Konfirmasi dan bubuhkan").click()
    expect(page.get_by_role("heading", name="Dokumen Anda sudah bermeterai")).to_be_visible()
    with page.expect_download() as info:
        page.get_by_role("link", name="Unduh PDF bermeterai").click()
    target = tmp_path / name
    info.value.save_as(target)
    return target.read_bytes()


def verify(page: Page, name: str, document: bytes) -> str:
    page.goto("/verify")
    page.get_by_label("Dokumen PDF").set_input_files(
        {"name": name, "mimeType": "application/pdf", "buffer": document}
    )
    page.get_by_role("button", name="Periksa dokumen").click()
    return page.locator("#verdict").inner_text()


def test_register_buy_stamp_download_verify_and_tamper(
    page: Page, web_server: Server, axe: str, tmp_path: Path
) -> None:
    page.goto("/")
    looked_at(page, "home", axe)
    register(page, axe)
    buy(page, 2, axe)
    page.goto("/dashboard")
    expect(page.locator("#available")).to_have_text("2")
    expect(page.locator("#orders .badge")).to_have_text(["Sudah masuk saldo"])
    looked_at(page, "dashboard", axe)

    original = letter_a4()
    upload(page, "surat.pdf", original)
    expect(page.get_by_role("heading", name="Tempatkan meterai")).to_be_visible()
    expect(page.locator("#stamp-box")).to_be_visible()
    click_at(page, 0.5, 0.5)
    x_pt, y_pt = placed(page)
    # The stamp's centre is where the user clicked: the middle of an A4 page.
    assert abs(x_pt - (595.28 / 2 - 50)) < 2 and abs(y_pt - (841.89 / 2 - 50)) < 2
    looked_at(page, "stamp-place", axe)
    stamped = confirm_and_download(page, tmp_path, "surat-bermeterai.pdf")
    looked_at(page, "stamp-done", axe)
    left, bottom, width, height = stamp_box_pt(original, stamped)
    assert abs(left - x_pt) < 1.5 and abs(bottom - y_pt) < 1.5, (left, bottom, x_pt, y_pt)
    assert abs(width - 100) < 2 and abs(height - 100) < 2

    assert verify(page, "surat-bermeterai.pdf", stamped) == "ASLI"
    looked_at(page, "verify-genuine", axe)

    tampered = stamped.replace(b"Surat Pernyataan", b"Surat Pernyataam", 1)
    assert tampered != stamped
    assert verify(page, "diubah.pdf", tampered) == "DIUBAH"
    screenshot(page, "verify-tampered")

    page.goto("/dashboard")
    expect(page.locator("#available")).to_have_text("1")
    expect(page.locator("#used")).to_have_text("1")


def test_placement_on_a_rotated_odd_page_by_keyboard(
    page: Page, web_server: Server, tmp_path: Path
) -> None:
    email = register(page)
    grant(web_server, email, 1)
    # A page turned a quarter, with a crop box off the origin: 370 x 260 pt as seen.
    original = make_pdf(media_box=(0, 0, 300, 500), crop_box=(20, 30, 280, 400), rotate=270)
    upload(page, "miring.pdf", original)
    expect(page.locator("#stamp-box")).to_be_visible()
    click_at(page, 0.05, 0.95)  # bottom-left corner: clamped to (0, 0)
    assert placed(page) == (0.0, 0.0)
    box = page.locator("#stamp-box")
    box.focus()
    for _ in range(5):
        box.press("ArrowRight")
    for _ in range(3):
        box.press("ArrowUp")
    box.press("Shift+ArrowUp")
    assert placed(page) == (50.0, 31.0)
    stamped = confirm_and_download(page, tmp_path, "miring-bermeterai.pdf")
    left, bottom, width, height = stamp_box_pt(original, stamped)
    assert abs(left - 50) < 1.5 and abs(bottom - 31) < 1.5, (left, bottom)
    assert abs(width - 100) < 2 and abs(height - 100) < 2


def encrypted_pdf() -> bytes:
    pdf = pikepdf.open(io.BytesIO(letter_a4()))
    buffer = io.BytesIO()
    pdf.save(buffer, encryption=pikepdf.Encryption(owner="pemilik", user="rahasia"))
    return buffer.getvalue()


def test_refusals_are_shown_in_bahasa_indonesia(page: Page, web_server: Server, axe: str) -> None:
    email = register(page)
    # No quota yet: refused before anything is placed, with a way to buy.
    upload(page, "surat.pdf", letter_a4())
    expect(page.locator(".alert.error")).to_contain_text("e-Meterai Anda habis")
    grant(web_server, email, 1)

    upload(page, "terkunci.pdf", encrypted_pdf())
    alert = page.locator(".alert.error")
    expect(alert).to_contain_text("PDF ini dikunci dengan kata sandi atau enkripsi")
    assert alert.get_attribute("data-code") == "PDF_ENCRYPTED"
    looked_at(page, "stamp-refused", axe)

    # Checked in the browser before sending: not a PDF.
    page.goto("/stamp")
    page.get_by_label("Dokumen PDF").set_input_files(
        {"name": "catatan.txt", "mimeType": "text/plain", "buffer": b"bukan pdf"}
    )
    expect(page.locator("#upload-error")).to_contain_text("Berkas ini bukan PDF")


def test_english_by_switch_and_verify_without_javascript(
    browser: Browser, web_server: Server
) -> None:
    context = browser.new_context(base_url=web_server.base_url, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto("/verify")
        expect(page.get_by_role("heading", name="Periksa e-Meterai")).to_be_visible()
        page.get_by_role("link", name="English").click()
        expect(page.get_by_role("heading", name="Verify an e-Meterai")).to_be_visible()
        page.get_by_label("PDF document").set_input_files(
            {"name": "surat.pdf", "mimeType": "application/pdf", "buffer": letter_a4()}
        )
        page.get_by_role("button", name="Check the document").click()
        expect(page.locator("#verdict")).to_have_text("NOT STAMPED")
        page.get_by_label("Serial number (22 characters, under the QR code)").fill("ABC")
        page.get_by_role("button", name="Look up").click()
        expect(page.locator(".verdict")).to_have_text("UNKNOWN SERIAL")
    finally:
        context.close()


def test_order_status_changes_on_its_own_and_a_failed_payment_is_said_plainly(
    page: Page, web_server: Server, axe: str
) -> None:
    register(page)
    page.goto("/buy")
    page.get_by_role("button", name="Pesan dan bayar").click()
    page.get_by_role("button", name="Simulasikan pembayaran gagal (SANDBOX)").click()
    expect(page.locator(".alert")).to_contain_text("Tidak ada yang ditagih")
    expect(page.locator("#order-status")).to_have_text("Menunggu pembayaran")
    expect(page.locator("#timeline")).to_contain_text("Pembayaran gagal")
    page.get_by_role("button", name="Bayar, dikonfirmasi setelah jeda (SANDBOX)").click()
    # No reload: the page asks the server at the pace it is told and shows the change.
    expect(page.locator("#order-status")).to_have_text("Sudah masuk saldo", timeout=20_000)
    expect(page.locator("#order-next").get_by_role("link", name="Bubuhkan meterai")).to_be_visible()


def test_issuer_console_duty_report_and_channel_console(
    page: Page, web_server: Server, axe: str, tmp_path: Path
) -> None:
    email = register(page)
    buy(page, 1)
    granted = web_server.cli("role", "grant", email, "issuer")
    assert granted.returncode == 0, granted.stderr
    page.goto("/console/issuer")
    expect(page.get_by_role("heading", name="Laporan bea meterai")).to_be_visible()
    # The module's server is shared: others bought too. Duty is the face value of each.
    sold = int(page.locator("#duty-sold").inner_text().replace(".", ""))
    assert sold >= 1
    expect(page.locator("#duty-owed")).to_have_text(f"Rp{sold * 10_000:,}".replace(",", "."))
    looked_at(page, "console-issuer", axe)
    with page.expect_download() as download:
        page.locator("#duty-csv").click()
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.splitlines()[0].startswith("day,stamps_sold")
    assert csv_text.splitlines()[-1].startswith(f"total,{sold},")
    page.get_by_role("button", name="Jalankan audit").click()
    expect(page.locator("#audit-result")).to_contain_text("lolos")

    name = f"kios-{uuid.uuid4().hex[:6]}"
    created = web_server.cli("channel", "create", name, "--kind", "reseller", "--credit-limit", "5")
    assert created.returncode == 0, created.stderr
    granted = web_server.cli("role", "grant", email, f"channel:{name}")
    assert granted.returncode == 0, granted.stderr
    page.goto("/console/channel")
    expect(page.get_by_role("heading", name=re.compile(name))).to_be_visible()
    looked_at(page, "console-channel", axe)
    page.get_by_role("button", name="Ganti kunci dan rahasia").click()
    expect(page.locator("#new-api-key")).to_contain_text("emc_")
    page.get_by_label("Berkas penyelesaian (CSV)").set_input_files(
        {
            "name": "settlement.csv",
            "mimeType": "text/csv",
            "buffer": b"payment_reference,order_id,amount_rupiah,settled_at\n"
            b"pay-1,ord_nothere,10000,2026-11-20T10:00:00Z\n",
        }
    )
    page.get_by_role("button", name="Rekonsiliasi").click()
    expect(page.locator("#settlement-result")).to_contain_text("Uji coba")
    expect(page.get_by_role("cell", name="Pesanan ini tidak ada di kanal ini")).to_be_visible()
    looked_at(page, "console-channel-settlement", axe)
