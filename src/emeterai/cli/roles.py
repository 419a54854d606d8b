"""`emeterai role grant|list`: who may open the issuer's and a channel's web console."""

from __future__ import annotations

from typing import Annotated

import typer

from emeterai.cli.common import DataDir, open_runtime, out
from emeterai.db import transaction
from emeterai.errors import BadInput

role_app = typer.Typer(help="Console roles: issuer, or channel:NAME.", no_args_is_help=True)


def _parse(role: str) -> tuple[str, str | None]:
    """`issuer`, or `channel:NAME` (the channel's name, as in `emeterai channel create`)."""
    name, _, channel = role.strip().partition(":")
    if name == "issuer" and not channel:
        return "issuer", None
    if name == "channel" and channel:
        return "channel", channel
    raise BadInput("a role is 'issuer' or 'channel:NAME'")


@role_app.command("grant")
def grant(
    email: str,
    role: Annotated[str, typer.Argument(help="issuer, or channel:NAME")],
    data_dir: DataDir = None,
) -> None:
    """Let an account open a console: the issuer's, or one channel's. Idempotent."""
    from emeterai.accounts import account_by_email
    from emeterai.accounts.roles import grant_role
    from emeterai.channels.management import channel_by_name

    kind, channel_name = _parse(role)
    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        account = account_by_email(session, email)
        scope = ""
        if channel_name is not None:
            scope = str(channel_by_name(session, channel_name).id)
        grant_role(session, account.id, kind, scope=scope, now=runtime.clock.now())
    out.print(f"{account.email} has the role {role}")


@role_app.command("list")
def list_roles(email: str, data_dir: DataDir = None) -> None:
    """The console roles of an account."""
    from emeterai.accounts import account_by_email
    from emeterai.accounts.roles import roles_of
    from emeterai.channels.models import Channel

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        account = account_by_email(session, email)
        for found in roles_of(session, account.id):
            if found.role == "channel":
                channel = session.get(Channel, int(found.scope)) if found.scope.isdigit() else None
                print(f"channel:{channel.name if channel else found.scope}")
            else:
                print(found.role)


def register(app: typer.Typer) -> None:
    app.add_typer(role_app, name="role")
