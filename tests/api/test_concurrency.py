"""50 stamp requests at once, from separate processes, against a balance of 10.

Real PostgreSQL, a real server with two worker processes: the row locks, not luck,
decide. Exactly 10 succeed, 40 get QUOTA_EXHAUSTED, and the audit passes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, start_server
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.support import corpus


@pytest.fixture(scope="module")
def two_worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = create_postgres_database()
    try:
        yield from start_server(tmp_path_factory.mktemp("race") / "var", url, workers=2)
    finally:
        drop_postgres_database(url)


def _stamp_once(arguments: tuple[str, str, bytes, int]) -> tuple[int, str, str]:
    base_url, token, document, index = arguments
    response = httpx.post(
        f"{base_url}/api/v1/stamps",
        files={"file": (f"doc-{index}.pdf", document, "application/pdf")},
        data={"page": "1", "x": "400", "y": "60"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    code = response.json()["code"] if response.status_code != 200 else ""
    return response.status_code, code, response.headers.get("X-Emeterai-Serial", "")


def test_fifty_parallel_stamps_against_ten_quota(two_worker_server: Server, tmp_path: Path) -> None:
    server = two_worker_server
    token = server.user("race@example.id", quota=10)
    documents = [corpus.letter_a4(), corpus.letter_size()]
    jobs = [(server.base_url, token, documents[i % 2], i) for i in range(50)]
    with multiprocessing.get_context("spawn").Pool(10) as pool:
        results = pool.map(_stamp_once, jobs)
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) == 10, results
    assert statuses.count(402) == 40, results
    assert {code for status, code, _ in results if status == 402} == {"QUOTA_EXHAUSTED"}
    assert len({serial for status, _, serial in results if status == 200}) == 10
    shown = server.cli("quota", "show", "race@example.id", "--json")
    assert '"available": 0' in shown.stdout and '"used": 10' in shown.stdout
    audit = server.cli("audit")
    assert audit.returncode == 0, audit.stdout
