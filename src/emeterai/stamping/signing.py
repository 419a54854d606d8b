"""The signer seam: in this process (CLI, worker) or in a pool of processes (HTTP).

Signing is CPU-bound Python, so the HTTP server never runs it on the event loop nor in
its threads: each pool process loads the issuer key once and keeps it.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from emeterai.config import Settings
from emeterai.errors import EmeteraiError, KeyPassphraseMissing, SigningFailed
from emeterai.pdf import Placement, StampSigner
from emeterai.pki import SigningMaterial, TokenKey, load_signing_material

SIGN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SignJob:
    document: bytes
    serial: str
    verify_url: str
    placement: Placement
    signed_at: datetime


class Signer(Protocol):
    def __call__(self, job: SignJob) -> bytes: ...


def key_passphrase(settings: Settings) -> bytes:
    """From EMETERAI_KEY_PASSPHRASE, or the development file `emeterai init` wrote."""
    if settings.key_passphrase is not None:
        return settings.key_passphrase.get_secret_value().encode()
    if settings.passphrase_file.exists():
        return settings.passphrase_file.read_text().strip().encode()
    raise KeyPassphraseMissing(
        f"set EMETERAI_KEY_PASSPHRASE (no development file at {settings.passphrase_file})"
    )


def token_key(settings: Settings) -> TokenKey | None:
    """The PKCS#11 token holding the stamping key, when one is configured."""
    if settings.pkcs11_module is None:
        return None
    if settings.pkcs11_pin is None:
        raise KeyPassphraseMissing("set EMETERAI_PKCS11_PIN for the PKCS#11 token")
    return TokenKey(
        module_path=settings.pkcs11_module,
        token_label=settings.pkcs11_token_label,
        key_label=settings.pkcs11_key_label,
        pin=settings.pkcs11_pin.get_secret_value(),
    )


def load_material(settings: Settings) -> SigningMaterial:
    token = token_key(settings)
    passphrase = b"" if token is not None else key_passphrase(settings)
    return load_signing_material(settings.pki_dir, passphrase, token=token)


class InProcessSigner:
    def __init__(self, material: SigningMaterial, *, timestamp_url: str | None = None) -> None:
        self._signer = StampSigner(material, timestamp_url=timestamp_url)

    def __call__(self, job: SignJob) -> bytes:
        return self._signer.sign(
            job.document,
            serial=job.serial,
            verify_url=job.verify_url,
            placement=job.placement,
            signed_at=job.signed_at,
        )


_WORKER_SIGNER: InProcessSigner | None = None


def _start_worker(material: SigningMaterial, timestamp_url: str | None) -> None:
    global _WORKER_SIGNER  # one signer per pool process, by design
    _WORKER_SIGNER = InProcessSigner(material, timestamp_url=timestamp_url)


def _sign_in_worker(job: SignJob) -> bytes:
    if _WORKER_SIGNER is None:
        raise SigningFailed("the signing process was not initialised")
    return _WORKER_SIGNER(job)


class SigningPool:
    """A bounded pool of signing processes (spawned, so no server thread is forked).

    A child that dies (the OOM killer, a crash in a C library) breaks a
    ProcessPoolExecutor for good; the pool is then rebuilt and the signature tried once
    more, so one dead process never disables stamping until a restart.
    """

    def __init__(self, settings: Settings, *, processes: int | None = None) -> None:
        self._material = load_material(settings)  # fail fast, here, not in a child
        self._timestamp_url = settings.timestamp_url
        self._processes = processes or settings.signing_process_count
        self._lock = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._material, self._timestamp_url),
        )

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = self._start()

    def __call__(self, job: SignJob) -> bytes:
        for attempt in (1, 2):
            pool = self._pool
            try:
                future = pool.submit(_sign_in_worker, job)
            except BrokenProcessPool:
                self._restart(pool)
                continue
            try:
                return future.result(timeout=SIGN_TIMEOUT_S)
            except BrokenProcessPool as error:
                self._restart(pool)
                if attempt == 2:
                    raise SigningFailed("the signing processes keep dying") from error
            except FutureTimeout as error:
                future.cancel()
                raise SigningFailed(f"signing took over {SIGN_TIMEOUT_S:.0f} s") from error
            except EmeteraiError:
                raise
            except Exception as error:
                raise SigningFailed(f"signing failed: {type(error).__name__}") from error
        raise SigningFailed("the signing processes could not be restarted")

    @property
    def healthy(self) -> bool:
        return not getattr(self._pool, "_broken", False)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
