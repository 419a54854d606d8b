"""Fixtures for stamping through the real use case: a signer, a funded user, helpers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from emeterai.accounts import create_account
from emeterai.config import Settings
from emeterai.db import transaction
from emeterai.pdf import Placement
from emeterai.pki import SigningMaterial, load_signing_material
from emeterai.quota import QuotaBalance, add_quota, quota_balance
from emeterai.runtime import Runtime
from emeterai.serials import Serial
from emeterai.stamping.service import StampedDocument, StampRequest, issue_stamp, placement_for
from emeterai.stamping.signing import InProcessSigner, Signer
from emeterai.verify.service import Verification, verify_document
from tests.conftest import PASSPHRASE
from tests.support.external import nss_db


@pytest.fixture(scope="session")
def issuer_material(issuer_pki_template: Path) -> SigningMaterial:
    return load_signing_material(issuer_pki_template, PASSPHRASE.encode())


@pytest.fixture(scope="session")
def in_process_signer(issuer_material: SigningMaterial) -> InProcessSigner:
    return InProcessSigner(issuer_material)


@pytest.fixture(scope="session")
def trusted_nss(tmp_path_factory: pytest.TempPathFactory, issuer_material: SigningMaterial) -> str:
    return nss_db(tmp_path_factory.mktemp("nss"), issuer_material.root_cert_pem)


@dataclass
class Desk:
    """One user at the stamping desk, with the runtime behind it."""

    runtime: Runtime
    signer: Signer
    account_id: int

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def stamp(
        self,
        document: bytes,
        *,
        page: int = 1,
        x: float | None = None,
        y: float | None = None,
        key: str | None = None,
        additional: bool = False,
        signer: Signer | None = None,
    ) -> StampedDocument:
        placement: Placement = placement_for(
            document, page=page, x_pt=x, y_pt=y, settings=self.settings
        )
        return issue_stamp(
            self.runtime.sessions,
            StampRequest(
                account_id=self.account_id,
                document=document,
                placement=placement,
                idempotency_key=key,
                allow_additional=additional,
            ),
            sign=signer or self.signer,
            blobs=self.runtime.blobs,
            settings=self.settings,
            clock=self.runtime.clock,
        )

    def balance(self) -> QuotaBalance:
        with transaction(self.runtime.sessions) as session:
            return quota_balance(session, self.account_id, now=self.runtime.clock.now())

    def serial_states(self) -> list[str]:
        with transaction(self.runtime.sessions) as session:
            return sorted(s.state for s in session.query(Serial).all())

    def verify(self, data: bytes) -> Verification:
        with transaction(self.runtime.sessions) as session:
            return verify_document(
                session,
                data,
                trust_roots_pem=self.runtime.trust_roots(),
                bytes_max=self.settings.upload_bytes_max,
                now=self.runtime.clock.now(),
            )


def open_desk(runtime: Runtime, signer: Signer, *, quota: int, email: str) -> Desk:
    now = runtime.clock.now()
    with transaction(runtime.sessions) as session:
        account_id = create_account(session, email, now=now).id
        if quota:
            add_quota(session, account_id, quota, reference=f"grant-{email}", now=now)
    return Desk(runtime=runtime, signer=signer, account_id=account_id)


@pytest.fixture
def desk(runtime: Runtime, in_process_signer: InProcessSigner) -> Desk:
    return open_desk(runtime, in_process_signer, quota=5, email="pelamar@example.id")
