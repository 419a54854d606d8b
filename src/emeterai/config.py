"""Settings: every knob of emeterai, validated once, read from `EMETERAI_*` variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMETERAI_", frozen=True, extra="ignore")

    data_dir: Path = Path("./var")
    # Default: SQLite (WAL) inside data_dir. PostgreSQL: postgresql+psycopg://...
    database_url: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    key_passphrase: SecretStr | None = None
    # Signature algorithm chosen at `init`: ecdsa-p256 (default) or rsa-2048.
    key_algorithm: str = Field(default="ecdsa-p256", pattern="^(ecdsa-p256|rsa-2048)$")
    # A timestamp authority (RFC 3161) URL turns PAdES B-B into B-T.
    timestamp_url: str | None = None
    # The stamping key on a PKCS#11 token (an HSM; SoftHSM2 in tests) instead of a file.
    pkcs11_module: str | None = None
    pkcs11_token_label: str = "emeterai"  # noqa: S105 (a label, not a secret)
    pkcs11_key_label: str = "emeterai-stamping"
    pkcs11_pin: SecretStr | None = None

    upload_bytes_max: int = Field(default=20 * MIB, ge=1024, le=512 * MIB)
    pages_max: int = Field(default=500, ge=1, le=100_000)
    # A reservation not posted within this time expires and its quota comes back.
    reservation_ttl_s: int = Field(default=300, ge=1, le=86_400)
    # Processes that sign PDFs for the HTTP server; 0 means one per CPU.
    signing_processes: int = Field(default=0, ge=0, le=64)
    # Fault-injection points (comma-separated) for crash tests. Never set in production.
    fault_points: str = ""
    # The sandbox payment provider (channels/sandbox.py): for demos and integration tests.
    payments_sandbox: bool = False

    # --- web (docs/web.md) ---
    # A signed-in session ends after this long, whatever the activity.
    web_session_ttl_s: int = Field(default=12 * 3600, ge=60, le=30 * 86_400)
    # Cookies are Secure on https requests anyway; set this behind a TLS proxy.
    web_cookie_secure: bool = False
    # How long a user may download a stamped document again from the dashboard.
    stamp_retention_days: int = Field(default=90, ge=1, le=3650)
    # Password reset e-mails are written as .eml files here (development mail backend).
    mail_dir: Path | None = None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'emeterai.db').resolve()}"

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def passphrase_file(self) -> Path:
        return self.data_dir / "key-passphrase"

    @property
    def signing_process_count(self) -> int:
        return self.signing_processes or (os.cpu_count() or 1)

    def verify_url(self, serial: str) -> str:
        return f"{self.public_url.rstrip('/')}/v/{serial}"


def load_settings(data_dir: Path | None = None) -> Settings:
    """Build settings from the environment; an explicit `data_dir` wins over it."""
    if data_dir is None:
        return Settings()
    return Settings(data_dir=data_dir)
