"""The security subsystem: the API's bearer tokens and the development certificates.

Contributes the ``token issue``, ``token revoke`` and ``certs init`` commands. Access control
itself (tokens and client certificates mapped to roles, default deny) is applied by the
local API (``edge_min.api.auth``) to every route any subsystem declares.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from edge_min.subsystem import Command, CommandContext, Subsystem


class Security(Subsystem):
    """Tokens and certificates."""

    name = "security"
    needs = ("storage",)

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """``token issue|revoke`` and ``certs init``."""
        from edge_min.security import certs

        return [
            Command(
                ("token", "issue"),
                "issue an API bearer token for a role",
                "edge-min token issue --role operator --ttl 1h",
                token_issue,
                _issue_arguments,
            ),
            Command(
                ("token", "revoke"),
                "revoke an API token or token id",
                "edge-min token revoke em1.eyJqdGkiOi...",
                token_revoke,
                _revoke_arguments,
            ),
            Command(
                ("certs", "init"),
                "make a development CA, central and device certificate",
                "edge-min certs init ./certs --device-id gw-42",
                lambda ctx: certs.run(ctx.args),
                certs.add_arguments,
            ),
        ]


def _issue_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", required=True, help="a role from access_control.authorization")
    p.add_argument(
        "--ttl",
        help="lifetime such as 30m, 1h, 7 days (default: access_control.authentication."
        "token_expiry)",
    )
    p.add_argument("--subject", help="who the token is for, recorded in the token (optional)")


def _revoke_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", metavar="TOKEN_OR_JTI", help="a whole token, or its id (jti)")


def token_issue(ctx: CommandContext) -> int:
    """Print a new bearer token, and nothing else, on stdout."""
    from edge_min.security.tokens import issue, key_path, load_key
    from edge_min.units import parse_duration

    args = ctx.args
    config, paths = ctx.context()
    ac = config.security_config.access_control
    ttl = ac.authentication.token_expiry if args.ttl is None else parse_duration(args.ttl)
    token = issue(
        args.role,
        ttl,
        key=load_key(key_path(paths.root)),
        now=time.time(),
        subject=args.subject,
        roles=[r.name for r in ac.authorization.roles],
    )
    print(token)
    return 0


def token_revoke(ctx: CommandContext) -> int:
    """Revoke a token (or its jti) in the data directory's database; prints what was revoked."""
    from edge_min.clock import iso
    from edge_min.security.tokens import RevocationList, key_path, load_key, revoke_token_or_id
    from edge_min.store import open_store

    config, paths = ctx.context()
    key = load_key(key_path(paths.root), create=False)
    paths.root.mkdir(parents=True, exist_ok=True)
    with open_store(str(paths.db), synchronous=config.storage.synchronous) as store:
        jti, exp = revoke_token_or_id(
            ctx.args.token, key=key, revocations=RevocationList(store.meta)
        )
    until = f"; it would have expired at {iso(exp)}" if exp is not None else ""
    print(f"revoked {jti}{until}")
    return 0
