"""Ops CLI: accounts without HTTP (issue 3).

    python -m auth create-user --email ops@example.com --admin   # password: $VERITY_NEW_PASSWORD or prompt
    python -m auth create-key --email ops@example.com --name ci --scope detect --scope read
    python -m auth set-limit --email a@b.co --daily-limit 1000
    python -m auth disable --email a@b.co                      # keys and tokens stop at once
    python -m auth enable --email a@b.co

Prints JSON on stdout; new keys are shown once. A refused request (weak or too long password,
email taken or malformed, unknown user) prints `error: <code>: <message>` on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from auth.accounts import Accounts, normalise_email
from config.startup import settings_or_exit
from errors import NotFound, VerityError
from logs import configure_logging
from store.factory import make_store
from store.records import SCOPES


def _out(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m auth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-user", help="a user (password from $VERITY_NEW_PASSWORD or a prompt)")
    create.add_argument("--email", required=True)
    create.add_argument("--admin", action="store_true", help="role admin")
    key = sub.add_parser("create-key", help="a new API key for a user (shown once)")
    key.add_argument("--email", required=True)
    key.add_argument("--name", default="cli")
    key.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help="repeat for each scope (admin: admins only); default: every scope of the user's role",
    )
    limit = sub.add_parser("set-limit", help="a user's daily request limit")
    limit.add_argument("--email", required=True)
    limit.add_argument("--daily-limit", type=int, required=True)
    for name, what in (("disable", "stop a user's keys and tokens at once"), ("enable", "undo disable")):
        sub.add_parser(name, help=what).add_argument("--email", required=True)
    args = parser.parse_args(argv)

    settings = settings_or_exit()
    configure_logging(settings)
    try:
        return _run(args, Accounts(make_store(settings), settings))
    except VerityError as exc:  # the same refusals the HTTP API answers with 4xx: no traceback
        sys.stderr.write(f"error: {exc.code}: {exc.message}\n")
        return 2


def _run(args: argparse.Namespace, accounts: Accounts) -> int:
    settings = accounts.settings
    if args.command == "create-user":
        password = os.environ.get("VERITY_NEW_PASSWORD") or getpass.getpass("password: ")
        user, api_key, secret = accounts.signup(args.email, password, role="admin" if args.admin else "user")
        shown = {**api_key.public(user.role), "key": secret}
        _out({"user": user.public(settings.daily_limit), "api_key": shown})
        return 0
    user = accounts.store.get_user_by_email(normalise_email(args.email))
    if user is None:
        raise NotFound(f"no user {args.email}", code="user_not_found")
    if args.command == "create-key":
        api_key, secret = accounts.create_key(user, args.name, scopes=args.scope)
        _out({**api_key.public(user.role), "key": secret})
    elif args.command == "set-limit":
        _out(accounts.store.update_user(user.id, daily_limit=args.daily_limit).public(settings.daily_limit))  # type: ignore[union-attr]
    else:
        updated = accounts.store.update_user(user.id, disabled=args.command == "disable")
        _out(updated.public(settings.daily_limit))  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
