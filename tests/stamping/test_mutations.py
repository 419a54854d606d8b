"""Damaged PDFs, as people upload them: every outcome is a stamp or a coded refusal.

Seeded mutations of real documents (bytes flipped, cut short, chunks duplicated or
dropped) go through the real use case. None may raise anything but a domain error, none
may charge without a stamp, and the audit must hold afterwards.
"""

from __future__ import annotations

import random

import pytest

from emeterai.audit import run_audit
from emeterai.db import transaction
from emeterai.errors import EmeteraiError
from emeterai.runtime import Runtime
from emeterai.stamping.signing import InProcessSigner
from emeterai.verify.service import Verdict
from tests.stamping.conftest import open_desk
from tests.support import corpus

MUTATIONS = 60
QUOTA = 100
KNOWN_REFUSALS = {
    "NOT_A_PDF",
    "PDF_MALFORMED",
    "PDF_ENCRYPTED",
    "PDF_TOO_LARGE",
    "PDF_TOO_MANY_PAGES",
    "PDF_LOCKED",
    "PAGE_OUT_OF_RANGE",
    "POSITION_OFF_PAGE",
    "ALREADY_STAMPED",
}


def mutate(document: bytes, rng: random.Random) -> bytes:
    data = bytearray(document)
    choice = rng.randrange(4)
    if choice == 0:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == 1:
        del data[rng.randrange(9, len(data)) :]
    elif choice == 2:
        start = rng.randrange(len(data))
        data[start:start] = data[start : start + rng.randint(1, 200)]
    else:
        start = rng.randrange(9, len(data))
        del data[start : start + rng.randint(1, 200)]
    return bytes(data)


@pytest.mark.parametrize("seed", [2024, 2025])
def test_mutated_documents_never_escape_as_crashes(
    runtime: Runtime, in_process_signer: InProcessSigner, seed: int
) -> None:
    desk = open_desk(runtime, in_process_signer, quota=QUOTA, email="mutant@example.id")
    rng = random.Random(seed)
    sources = [corpus.letter_a4(), corpus.with_acroform(), corpus.rotated(90)]
    stamped = 0
    for index in range(MUTATIONS):
        damaged = mutate(sources[index % len(sources)], rng)
        try:
            result = desk.stamp(damaged, x=72, y=72)
        except EmeteraiError as error:
            assert error.code in KNOWN_REFUSALS, (error.code, error.detail)
            continue
        stamped += 1
        assert desk.verify(result.document).verdict is Verdict.GENUINE
    balance = desk.balance()
    assert (balance.used, balance.reserved, balance.available) == (stamped, 0, QUOTA - stamped)
    with transaction(desk.runtime.sessions) as session:
        report = run_audit(session)
    assert report.ok, report.findings


def test_mutated_stamped_documents_never_verify_as_genuine(
    runtime: Runtime, in_process_signer: InProcessSigner
) -> None:
    desk = open_desk(runtime, in_process_signer, quota=1, email="forger@example.id")
    original = desk.stamp(corpus.letter_a4()).document
    rng = random.Random(7)
    verdicts: dict[str, int] = {}
    for _ in range(MUTATIONS):
        damaged = mutate(original, rng)
        if damaged == original:
            continue
        try:
            verdict = desk.verify(damaged).verdict.value
        except EmeteraiError as error:
            assert error.code in {"PDF_MALFORMED", "NOT_A_PDF"}, (error.code, error.detail)
            verdict = error.code
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
    assert "GENUINE" not in verdicts, verdicts
