"""Every table, imported in one place so the metadata is complete for Alembic and audit."""

from emeterai.accounts.models import Account, ApiToken
from emeterai.accounts.web_models import (  # web sign-in and console roles
    AccountPassword,
    AccountRole,
    LoginThrottle,
    PasswordResetToken,
    WebSession,
)
from emeterai.channels.models import (  # sales channels, orders, payments
    Channel,
    ChannelApiKey,
    ChannelWebhookSecret,
    Order,
    OrderEvent,
    Payment,
    Rejection,
    WebhookNonce,
)
from emeterai.db import Base
from emeterai.jobs.models import Job, JobItem
from emeterai.ledger.models import LedgerAccount, Transfer
from emeterai.serials.models import Serial
from emeterai.stamping.models import Stamp

metadata = Base.metadata

__all__ = [
    "Account",
    "AccountPassword",
    "AccountRole",
    "ApiToken",
    "Channel",
    "ChannelApiKey",
    "ChannelWebhookSecret",
    "Job",
    "JobItem",
    "LedgerAccount",
    "LoginThrottle",
    "Order",
    "OrderEvent",
    "PasswordResetToken",
    "Payment",
    "Rejection",
    "Serial",
    "Stamp",
    "Transfer",
    "WebSession",
    "WebhookNonce",
    "metadata",
]
