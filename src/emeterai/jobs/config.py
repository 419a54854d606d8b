"""Knobs of bulk jobs and workers, read from `EMETERAI_JOBS_*` (the retention period is the
core `EMETERAI_STAMP_RETENTION_DAYS`)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMETERAI_JOBS_", frozen=True, extra="ignore")

    # Bounds of one batch. Every document is also bound by EMETERAI_UPLOAD_BYTES_MAX.
    documents_max: int = Field(default=1000, ge=1, le=100_000)
    bytes_max: int = Field(default=200 * MIB, ge=1024, le=8 * 1024 * MIB)
    # A document's quota reservation lives this long. Long on purpose: a batch may wait in
    # the queue for hours in a peak. A document picked up after its reservation expired
    # gets a fresh one (see worker._ensure_reservation), or fails with QUOTA_EXHAUSTED.
    reservation_ttl_s: int = Field(default=2 * 86_400, ge=60, le=30 * 86_400)
    # Retries of a document: exponential backoff from base to max, then dead-letter.
    attempts_max: int = Field(default=5, ge=1, le=50)
    backoff_base_s: float = Field(default=2.0, ge=0.0, le=3600.0)
    backoff_max_s: float = Field(default=300.0, ge=0.0, le=86_400.0)
    # A claimed document is leased; the worker's heartbeat renews the lease. A lease that
    # runs out (the worker died) makes the document claimable again.
    lease_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    heartbeat_s: float = Field(default=10.0, ge=0.1, le=600.0)
    # How long an idle worker sleeps before it looks for work again.
    poll_s: float = Field(default=1.0, ge=0.01, le=60.0)
    # Periodic tasks a worker runs between documents.
    sweep_interval_s: float = Field(default=30.0, ge=0.1, le=3600.0)
    retention_interval_s: float = Field(default=3600.0, ge=1.0, le=86_400.0)
    # Completion webhooks.
    webhook_timeout_s: float = Field(default=10.0, ge=0.1, le=120.0)
    webhook_attempts_max: int = Field(default=8, ge=1, le=50)

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> JobSettings:
        if self.heartbeat_s * 2 > self.lease_s:
            raise ValueError("heartbeat_s must be at most half of lease_s")
        return self
