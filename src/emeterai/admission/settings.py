"""The waiting room's knobs, read from `EMETERAI_ADMISSION_*` (see docs/admission.md)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PROTECTED = (
    "POST /api/v1/stamps,"
    "POST /api/v1/me/orders,"
    "POST /api/v1/channels/orders,"
    "POST /api/v1/accounts,"
    "POST /daftar,"
    "POST /register,"
    # The web's signing step (not the upload, so a waiting person keeps their file) and
    # its purchase form.
    "POST /stamp/,"
    "POST /buy"
)


class AdmissionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMETERAI_ADMISSION_", frozen=True, extra="ignore")

    # False switches the waiting room off: the 2024 design, kept for the spike comparison.
    enabled: bool = True
    latency_target_s: float = Field(default=2.0, gt=0.05, le=120)
    # A pinned rate (admissions per second, per process) turns the controller off.
    rate_per_s: float | None = Field(default=None, gt=0, le=100_000)
    rate_initial_per_s: float = Field(default=4.0, gt=0, le=100_000)
    rate_min_per_s: float = Field(default=0.2, gt=0, le=100_000)
    rate_max_per_s: float = Field(default=500.0, gt=0, le=100_000)
    # Protected requests in flight per process, pinned. 0: they follow the stamp latency,
    # from one to three per signing process (SlotSizer, docs/admission.md).
    inflight_max: int = Field(default=0, ge=0, le=1024)
    local_wait_s: float = Field(default=1.0, ge=0, le=30)
    # A ticket due within this time is held open until the frontier passes it, rather
    # than sent away to come back late (bounded: at most 16 x inflight_max held). Near
    # the head, Retry-After aims at half of it before the turn.
    hold_s: float = Field(default=4.0, ge=0, le=10)
    other_inflight_max: int = Field(default=16, ge=1, le=4096)
    pass_ttl_s: int = Field(default=300, ge=5, le=86_400)
    ticket_ttl_s: int = Field(default=7200, ge=60, le=7 * 86_400)
    key_rotation_s: int = Field(default=21_600, ge=60, le=30 * 86_400)
    secret: SecretStr | None = None
    store_url: str | None = None
    protected: str = DEFAULT_PROTECTED
    trusted_proxies: str = "127.0.0.1,::1"
    tick_s: float = Field(default=0.25, ge=0.01, le=5)
    # Token buckets: rate per second and burst, per binding and per client address.
    binding_rate_per_s: float = Field(default=2.0, gt=0, le=10_000)
    binding_burst: float = Field(default=6.0, ge=1, le=100_000)
    address_rate_per_s: float = Field(default=20.0, gt=0, le=100_000)
    address_burst: float = Field(default=60.0, ge=1, le=1_000_000)
    address_tickets_per_minute: float = Field(default=30.0, gt=0, le=1_000_000)
    queue_polls_per_s: float = Field(default=1.0, gt=0, le=10_000)
    limiter_keys_max: int = Field(default=20_000, ge=100, le=10_000_000)

    def protected_routes(self) -> tuple[tuple[str, str], ...]:
        routes: list[tuple[str, str]] = []
        for entry in self.protected.split(","):
            parts = entry.split()
            if len(parts) == 2:
                routes.append((parts[0].upper(), parts[1]))
        return tuple(routes)

    def trusted_proxy_set(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.trusted_proxies.split(",") if part.strip())
