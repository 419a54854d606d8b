"""Console roles: the issuer's operators, and the people of a sales channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from emeterai.accounts.web_models import AccountRole
from emeterai.errors import BadInput

__all__ = ["ROLES", "Role", "grant_role", "roles_of"]

ROLES = ("issuer", "channel")
SCOPE_LENGTH_MAX = 64


@dataclass(frozen=True)
class Role:
    role: str
    scope: str  # the channel's id for `channel`; empty for `issuer`


def grant_role(
    session: Session, account_id: int, role: str, *, scope: str = "", now: datetime
) -> Role:
    """Idempotent: granting a role twice changes nothing."""
    scope = scope.strip()
    if role not in ROLES:
        raise BadInput(f"a role is one of {', '.join(ROLES)}")
    if (role == "channel") != bool(scope) or len(scope) > SCOPE_LENGTH_MAX:
        raise BadInput("role 'channel' needs the channel's id; 'issuer' takes none")
    existing = session.scalars(
        select(AccountRole).where(
            AccountRole.account_id == account_id,
            AccountRole.role == role,
            AccountRole.scope == scope,
        )
    ).first()
    if existing is None:
        session.add(AccountRole(account_id=account_id, role=role, scope=scope, created_at=now))
        session.flush()
    return Role(role=role, scope=scope)


def roles_of(session: Session, account_id: int) -> list[Role]:
    rows = session.scalars(
        select(AccountRole).where(AccountRole.account_id == account_id).order_by(AccountRole.id)
    ).all()
    return [Role(role=row.role, scope=row.scope) for row in rows]
