"""The development mail backend: each message is written as an .eml file under the data
directory (`EMETERAI_MAIL_DIR`, default `DATA_DIR/mail`) and logged. Sent only after the
transaction that made it has committed."""

from __future__ import annotations

import logging
import os
import secrets
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

from emeterai.config import Settings

log = logging.getLogger("emeterai.mail")
SENDER = "e-Meterai <no-reply@emeterai.invalid>"


def mail_dir(settings: Settings) -> Path:
    return settings.mail_dir or settings.data_dir / "mail"


def send_mail(settings: Settings, *, to: str, subject: str, body: str, now: datetime) -> Path:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = now.strftime("%a, %d %b %Y %H:%M:%S +0000")
    message.set_content(body)
    directory = mail_dir(settings)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}.eml"
    temporary = directory / f".{name}.tmp"
    temporary.write_bytes(message.as_bytes())
    os.chmod(temporary, 0o600)
    os.replace(temporary, directory / name)
    # The link is a secret: the log names the file, never the body.
    log.info("mail to %s written to %s", to, directory / name)
    return directory / name
