"""The sandbox payment provider: it plays a channel's payment system, for demos and for
channels' integration tests. On only with EMETERAI_PAYMENTS_SANDBOX=1.

It signs confirmations with the channel's real webhook secret and hands them to the real
webhook use case (`payments.handle_webhook`), so every check a channel's own callback
meets (timestamp, signature, replay, amount, exactly-once) runs for it too. Everything it
answers carries `"sandbox": true`, and it logs under "emeterai.sandbox".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from emeterai.channels import signing
from emeterai.channels.keys import live_webhook_secrets
from emeterai.channels.orders import add_event, get_order
from emeterai.channels.payments import Credited, handle_webhook
from emeterai.clock import Clock
from emeterai.config import Settings
from emeterai.db import read_transaction, transaction
from emeterai.errors import BadInput, EmeteraiError, SandboxDisabled

log = logging.getLogger("emeterai.sandbox")

OUTCOMES = ("confirm", "fail", "delay")
DUPLICATES_MAX = 10
DELAY_S_MAX = 60


@dataclass(frozen=True)
class SandboxPlan:
    order_id: str
    channel_id: int
    outcome: str
    duplicates: int
    delay_s: int
    payment_reference: str


def check_enabled(settings: Settings) -> None:
    if not settings.payments_sandbox:
        raise SandboxDisabled("set EMETERAI_PAYMENTS_SANDBOX=1 to use the sandbox provider")


def plan_payment(
    sessions: sessionmaker[Session],
    settings: Settings,
    order_id: str,
    *,
    outcome: str,
    duplicates: int,
    delay_s: int,
    now: datetime,
    account_id: int | None = None,
    channel_id: int | None = None,
) -> SandboxPlan:
    """Check the request and note a failed payment; the edge then runs the plan. Its
    unit of work writes only to note a failure: checking a confirmation never takes
    SQLite's write lock (the payment handler's own transaction does)."""
    check_enabled(settings)
    if outcome not in OUTCOMES:
        raise BadInput(f"outcome must be one of {', '.join(OUTCOMES)}")
    if not 0 <= duplicates <= DUPLICATES_MAX or not 0 <= delay_s <= DELAY_S_MAX:
        raise BadInput(f"duplicates 0..{DUPLICATES_MAX}, delay_s 0..{DELAY_S_MAX}")
    unit = transaction if outcome == "fail" else read_transaction
    with unit(sessions) as session:
        order = get_order(session, order_id, account_id=account_id, channel_id=channel_id)
        if outcome == "fail":
            note = "SANDBOX: the simulated payment failed"
            add_event(session, order.id, "payment_failed", now, note)
            log.warning("SANDBOX payment failed for order %s", order.id)
    return SandboxPlan(
        order_id=order.id,
        channel_id=order.channel_id,
        outcome=outcome,
        duplicates=duplicates,
        delay_s=delay_s if outcome == "delay" else 0,
        payment_reference=f"sandbox-{order.id}",
    )


def deliver(
    sessions: sessionmaker[Session], settings: Settings, clock: Clock, plan: SandboxPlan
) -> list[dict[str, object]]:
    """Send the confirmation (and its duplicates, each signed anew) to the real handler."""
    with read_transaction(sessions) as session:
        order = get_order(session, plan.order_id)
        secret = live_webhook_secrets(session, settings, plan.channel_id, now=clock.now())[0]
        amount = order.amount_rupiah
    body = json.dumps(
        {
            "order_id": plan.order_id,
            "payment_reference": plan.payment_reference,
            "amount_rupiah": amount,
        }
    ).encode()
    answers: list[dict[str, object]] = []
    now_s = int(clock.now().timestamp())
    for attempt in range(1 + plan.duplicates):
        timestamp = now_s - attempt  # a re-delivery is signed anew, as providers do
        log.warning(
            "SANDBOX confirming order %s (delivery %d of %d)",
            plan.order_id,
            attempt + 1,
            1 + plan.duplicates,
        )
        try:
            credited: Credited = handle_webhook(
                sessions,
                settings,
                clock,
                body=body,
                timestamp_header=str(timestamp),
                signature_header=signing.sign(secret, timestamp, body),
                source="sandbox",
            )
            answers.append({"sandbox": True, **credited.as_dict()})
        except EmeteraiError as error:
            answers.append({"sandbox": True, "code": error.code, "detail": error.detail})
    return answers
