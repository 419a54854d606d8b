"""The HTTP API through real requests to a real server, on both databases."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import UPLOAD_BYTES_MAX, Server
from tests.conftest import PUBLIC_URL
from tests.support import corpus, tamper
from tests.support.external import assert_pdfsig_ok, assert_qpdf_ok, decode_qr, nss_db

PROBLEM_JSON = "application/problem+json"


def _email() -> str:
    return f"u{uuid.uuid4().hex[:10]}@example.id"


def _stamp(
    server: Server,
    token: str,
    document: bytes,
    *,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/api/v1/stamps",
        files={"file": ("surat.pdf", document, "application/pdf")},
        data=data or {"page": "1", "x": "400", "y": "60"},
        headers={"Authorization": f"Bearer {token}", **(headers or {})},
        timeout=60,
    )


def _verify(server: Server, document: bytes) -> dict[str, object]:
    response = httpx.post(
        f"{server.base_url}/api/v1/verify",
        files={"file": ("x.pdf", document, "application/pdf")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["code"] == code


def test_openapi_spec_is_served(server: Server) -> None:
    spec = httpx.get(f"{server.base_url}/openapi.json").json()
    for path in (
        "/api/v1/stamps",
        "/api/v1/verify",
        "/api/v1/serials/{serial}",
        "/api/v1/me/quota",
        "/api/v1/me/stamps",
    ):
        assert path in spec["paths"], path


def test_stamp_verify_and_look_up(server: Server, tmp_path: Path) -> None:
    token = server.user(_email(), quota=2)
    stamped = _stamp(server, token, corpus.letter_a4())
    assert stamped.status_code == 200, stamped.text
    assert stamped.headers["content-type"] == "application/pdf"
    serial = stamped.headers["X-Emeterai-Serial"]
    output = tmp_path / "stamped.pdf"
    output.write_bytes(stamped.content)
    root = server.cli("pki", "export-root").stdout.encode()
    assert_pdfsig_ok(output, nss_db(tmp_path, root))
    assert_qpdf_ok(output)
    assert decode_qr(output, 1) == [f"{PUBLIC_URL}/v/{serial}"]

    verdict = _verify(server, stamped.content)
    assert verdict["verdict"] == "GENUINE" and verdict["serial"] == serial
    assert _verify(server, tamper.flip_byte_in_signed_range(stamped.content))["verdict"] == (
        "TAMPERED"
    )

    status = httpx.get(f"{server.base_url}/api/v1/serials/{serial.lower()}").json()
    assert status["state"] == "used"
    assert set(status) == {
        "serial",
        "state",
        "stamped_at",
        "document_sha256",
        "revoked_at",
        "revoked_reason",
    }

    page = httpx.get(f"{server.base_url}/v/{serial}")
    assert page.status_code == 200 and serial in page.text
    compared = httpx.post(
        f"{server.base_url}/v/{serial}",
        files={"file": ("x.pdf", stamped.content, "application/pdf")},
    )
    assert "ASLI" in compared.text

    headers = {"Authorization": f"Bearer {token}"}
    quota = httpx.get(f"{server.base_url}/api/v1/me/quota", headers=headers).json()
    assert (quota["available"], quota["reserved"], quota["used"]) == (1, 0, 1)
    stamps = httpx.get(f"{server.base_url}/api/v1/me/stamps", headers=headers).json()
    assert [item["serial"] for item in stamps["items"]] == [serial]
    assert stamps["items"][0]["verify_url"] == f"{PUBLIC_URL}/v/{serial}"
    download = httpx.get(f"{server.base_url}/api/v1/me/stamps/{serial}/document", headers=headers)
    assert download.content == stamped.content


def test_queries_are_scoped_to_their_owner(server: Server) -> None:
    owner = server.user(_email(), quota=1)
    stranger = server.user(_email(), quota=0)
    serial = _stamp(server, owner, corpus.letter_a4()).headers["X-Emeterai-Serial"]
    headers = {"Authorization": f"Bearer {stranger}"}
    response = httpx.get(f"{server.base_url}/api/v1/me/stamps/{serial}/document", headers=headers)
    _problem(response, 404, "SERIAL_NOT_FOUND")
    assert httpx.get(f"{server.base_url}/api/v1/me/stamps", headers=headers).json()["items"] == []


def test_idempotency_key_returns_the_same_stamp(server: Server) -> None:
    token = server.user(_email(), quota=3)
    document = corpus.letter_a4()
    first = _stamp(server, token, document, headers={"Idempotency-Key": "k-1"})
    again = _stamp(server, token, document, headers={"Idempotency-Key": "k-1"})
    assert first.headers["X-Emeterai-Serial"] == again.headers["X-Emeterai-Serial"]
    assert first.content == again.content
    quota = httpx.get(
        f"{server.base_url}/api/v1/me/quota", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert quota["used"] == 1
    _problem(
        _stamp(server, token, corpus.letter_size(), headers={"Idempotency-Key": "k-1"}),
        409,
        "IDEMPOTENCY_CONFLICT",
    )


@pytest.mark.parametrize(
    ("document", "data", "status", "code"),
    [
        (corpus.encrypted, None, 422, "PDF_ENCRYPTED"),
        (corpus.truncated, None, 422, "PDF_MALFORMED"),
        (corpus.not_a_pdf, None, 422, "NOT_A_PDF"),
        (lambda: b"", None, 422, "NOT_A_PDF"),
        (corpus.letter_a4, {"page": "3"}, 422, "PAGE_OUT_OF_RANGE"),
        (corpus.letter_a4, {"page": "0"}, 422, "BAD_INPUT"),
        (corpus.letter_a4, {"page": "x"}, 422, "BAD_INPUT"),
        (corpus.letter_a4, {"x": "nan", "y": "10"}, 422, "POSITION_OFF_PAGE"),
        (corpus.letter_a4, {"x": "590", "y": "10"}, 422, "POSITION_OFF_PAGE"),
        (lambda: b"%PDF-1.7\n" + b"0" * (UPLOAD_BYTES_MAX + 10), None, 413, "PDF_TOO_LARGE"),
    ],
)
def test_bad_input_is_refused_with_its_code_and_charges_nothing(
    server: Server, document: object, data: dict[str, str] | None, status: int, code: str
) -> None:
    token = server.user(_email(), quota=1)
    response = _stamp(server, token, document(), data=data)  # type: ignore[operator]
    _problem(response, status, code)
    quota = httpx.get(
        f"{server.base_url}/api/v1/me/quota", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert (quota["available"], quota["reserved"]) == (1, 0)


def test_authentication_is_required(server: Server) -> None:
    _problem(_stamp(server, "emt_wrong", corpus.letter_a4()), 401, "UNAUTHENTICATED")
    response = httpx.post(
        f"{server.base_url}/api/v1/stamps",
        files={"file": ("a.pdf", corpus.letter_a4(), "application/pdf")},
    )
    _problem(response, 401, "UNAUTHENTICATED")
    _problem(httpx.get(f"{server.base_url}/api/v1/me/quota"), 401, "UNAUTHENTICATED")


def test_already_stamped_and_exhausted(server: Server) -> None:
    token = server.user(_email(), quota=1)
    stamped = _stamp(server, token, corpus.letter_a4())
    _problem(_stamp(server, token, stamped.content), 409, "ALREADY_STAMPED")
    _problem(_stamp(server, token, corpus.letter_size()), 402, "QUOTA_EXHAUSTED")


def test_unknown_and_mistyped_serials(server: Server) -> None:
    _problem(
        httpx.get(f"{server.base_url}/api/v1/serials/0000000000000000000001"),
        422,
        "INVALID_SERIAL",
    )
    _problem(
        httpx.get(f"{server.base_url}/api/v1/serials/0000000000000000000000"),
        404,
        "SERIAL_NOT_FOUND",
    )
    assert httpx.get(f"{server.base_url}/v/0000000000000000000000").status_code == 404


def test_a_revoked_token_stops_at_once(server: Server) -> None:
    email = _email()
    token = server.user(email, quota=0)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.base_url}/api/v1/me/quota", headers=headers).status_code == 200
    revoked = server.cli("account", "revoke-tokens", email)
    assert revoked.returncode == 0 and "1 token" in revoked.stdout
    _problem(
        httpx.get(f"{server.base_url}/api/v1/me/quota", headers=headers), 401, "UNAUTHENTICATED"
    )
    fresh = server.cli("account", "token", email).stdout.strip()
    response = httpx.get(
        f"{server.base_url}/api/v1/me/quota", headers={"Authorization": f"Bearer {fresh}"}
    )
    assert response.status_code == 200


def test_huge_page_cursor_is_refused_not_a_crash(server: Server) -> None:
    token = server.user(_email(), quota=0)
    response = httpx.get(
        f"{server.base_url}/api/v1/me/stamps",
        params={"before_id": str(2**63)},
        headers={"Authorization": f"Bearer {token}"},
    )
    _problem(response, 422, "BAD_INPUT")
