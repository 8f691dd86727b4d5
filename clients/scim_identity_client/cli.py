"""identityctl: the admin CLI of the identity service.

    identityctl tenant create acme          # prints the tenant id
    identityctl token issue acme            # prints the secret alone on its last line

The target is --target or IDENTITY_TARGET (default 127.0.0.1:50051). When the
core is secured: IDENTITY_TOKEN or IDENTITY_TOKEN_FILE (a service credential),
IDENTITY_TLS_CA_FILE, IDENTITY_TLS_CERT_FILE and IDENTITY_TLS_KEY_FILE (or the
matching flags). Errors are one readable line on stderr and exit status 1; never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from scim_identity_api.env import SecretSettingError, secret
from scim_identity_api.v1 import (
    changes_pb2,
    groups_pb2,
    history_pb2,
    policy_pb2,
    tenants_pb2,
    users_pb2,
)

from ._common import RECONNECT_OPTIONS, CallContext
from .client import IdentityClient
from .errors import IdentityError, Unavailable
from .urls import admin_sign_in_url, scim_urls
from .watch import event_name

SCOPES = {
    "full": tenants_pb2.TOKEN_SCOPE_FULL,
    "read-only": tenants_pb2.TOKEN_SCOPE_READ_ONLY,
    "users-only": tenants_pb2.TOKEN_SCOPE_USERS_ONLY,
}
SCOPE_NAMES = {v: k for k, v in SCOPES.items()} | {0: "full"}
KINDS = {
    "create": history_pb2.OPERATION_KIND_CREATE,
    "read": history_pb2.OPERATION_KIND_READ,
    "update": history_pb2.OPERATION_KIND_UPDATE,
    "delete": history_pb2.OPERATION_KIND_DELETE,
    "search": history_pb2.OPERATION_KIND_SEARCH,
    "bulk": history_pb2.OPERATION_KIND_BULK,
}
KIND_NAMES = {v: k for k, v in KINDS.items()}
#: Where `make run` serves SCIM (tools/run_local.py).
LOCAL_GATEWAY = "http://127.0.0.1:8080"
#: Where `make run` serves the admin console.
LOCAL_CONSOLE = "http://127.0.0.1:8081"
ADMIN = CallContext(actor_kind="admin", actor_id=os.environ.get("USER", "identityctl"))


def _time(t: timestamp_pb2.Timestamp) -> str:
    if not t.seconds and not t.nanos:
        return "-"
    return t.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_tenant(t: tenants_pb2.Tenant) -> None:
    state = "active" if t.active else "inactive"
    print(f"{t.id}  {t.name:<24} {state:<8} revision={t.revision}  created={_time(t.created)}")


def _print_token(t: tenants_pb2.Token) -> None:
    state = "revoked" if t.HasField("revoked") else "live"
    if (
        state == "live"
        and t.HasField("expires")
        and t.expires.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)
    ):
        state = "expired"
    print(
        f"{t.id}  {t.prefix}…  {state:<7} scope={SCOPE_NAMES.get(t.scope, '?'):<10} "
        f"created={_time(t.created)} last_used={_time(t.last_used)} "
        f"expires={_time(t.expires)}  {t.description}"
    )


def _tenant_id(client: IdentityClient, ref: str) -> str:
    return client.get_tenant(ref).id


def _as_dict(message: Any) -> dict[str, Any]:
    """A message as `-o json` prints it: proto field names, enums by name, every field."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _json_out(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "text") == "json"


def _emit(args: argparse.Namespace, messages: Iterable[Any], line: Callable[[Any], None]) -> None:
    """A list command's answer: a line each (text), or one JSON array (-o json)."""
    if _json_out(args):
        print(json.dumps([_as_dict(m) for m in messages], indent=2))
        return
    for m in messages:
        line(m)


def cmd_tenant(client: IdentityClient, args: argparse.Namespace) -> int:
    if args.action == "create":
        t = client.create_tenant(
            args.name, display_name=args.display_name or "", inactive=args.inactive, ctx=ADMIN
        )
        print(t.id)
    elif args.action == "list":
        _emit(args, client.list_tenants(), _print_tenant)
    elif args.action == "show":
        t = client.get_tenant(args.tenant)
        if _json_out(args):
            print(json.dumps(_as_dict(t), indent=2))
            return 0
        _print_tenant(t)
        if t.display_name != t.name:
            print(f"display name: {t.display_name}")
        urls = scim_urls(args.scim_base_url, t.name, t.id)
        print(f"SCIM base URL: {urls.by_name}")
        print(f"  by id:       {urls.by_id}")
        print(f"  by token:    {urls.by_token}  (the bearer token names the tenant)")
        if not os.environ.get("IDENTITY_SCIM_BASE_URL") and args.scim_base_url == LOCAL_GATEWAY:
            print(
                "  (the gateway of `make run`: set IDENTITY_SCIM_BASE_URL or --scim-base-url "
                "to your gateway's public URL)"
            )
    elif args.action in ("activate", "deactivate"):
        t = client.update_tenant(args.tenant, active=args.action == "activate", ctx=ADMIN)
        _print_tenant(t)
    elif args.action == "update":
        t = client.update_tenant(args.tenant, display_name=args.display_name, ctx=ADMIN)
        _print_tenant(t)
    elif args.action == "delete-connector":
        if args.purge and not args.yes:
            print(
                "identityctl: --purge deletes every user and group of the tenant; "
                "add --yes to confirm",
                file=sys.stderr,
            )
            return 1
        r = client.reset_connector(args.tenant, purge=args.purge, ctx=ADMIN)
        _print_tenant(r.tenant)
        kept = "deleted" if args.purge else "kept"
        print(
            f"connector deleted: {r.tokens_revoked} tokens revoked, policy rules, schemas and "
            f"mappings cleared; users and groups {kept} "
            f"({r.users_deleted} users, {r.groups_deleted} groups deleted)"
        )
    return 0


def cmd_token(client: IdentityClient, args: argparse.Namespace) -> int:
    if args.action in ("issue", "rotate"):
        expires = None
        if args.expires_in_days:
            expires = timestamp_pb2.Timestamp()
            expires.FromDatetime(datetime.now(UTC) + timedelta(days=args.expires_in_days))
        if args.action == "issue":
            issued = client.issue_token(
                args.tenant,
                description=args.description or "",
                scope=SCOPES[args.scope],
                expires=expires,
                ctx=ADMIN,
            )
            token, secret = issued.token, issued.secret
        else:
            # One transaction: works at the two-token limit, and the old secret
            # fails on the next request. Without --revoke the tenant's oldest live
            # token is the one rotated: rotating always retires one.
            old_id = args.revoke or _oldest_live_token(client, args.tenant)
            rotated = client.rotate_token(
                args.tenant,
                revoke_token_id=old_id,
                description=args.description or "",
                scope=SCOPES[args.scope] if args.scope else tenants_pb2.TOKEN_SCOPE_UNSPECIFIED,
                expires=expires,
                ctx=ADMIN,
            )
            token, secret = rotated.token, rotated.secret
            if rotated.HasField("revoked"):
                print(f"revoked {rotated.revoked.id}", file=sys.stderr)
        print(f"token id: {token.id} (the secret below is shown once)", file=sys.stderr)
        print(secret)
    elif args.action == "list":
        _emit(args, client.list_tokens(args.tenant, include_inactive=args.all), _print_token)
    elif args.action == "revoke":
        _print_token(client.revoke_token(args.tenant, args.token_id, ctx=ADMIN))
    return 0


def _oldest_live_token(client: IdentityClient, tenant: str) -> str:
    live = client.list_tokens(tenant)  # live ones, oldest first
    if not live:
        raise _Refused(f"tenant {tenant!r} has no live token to rotate: use `token issue`")
    return live[0].id


class _Refused(Exception):
    """A command refused before any call changed anything; its message is the line shown."""


def cmd_role(client: IdentityClient, args: argparse.Namespace) -> int:
    tid = _tenant_id(client, args.tenant)
    if args.action == "create":
        r = client.create_role(tid, args.role, description=args.description or "", ctx=ADMIN)
        print(r.name)
    elif args.action == "list":
        _emit(args, client.list_roles(tid), lambda r: print(f"{r.name:<32} {r.description}"))
    elif args.action == "delete":
        client.delete_role(tid, args.role, ctx=ADMIN)
    elif args.action in ("assign", "revoke"):
        fn = client.assign_role if args.action == "assign" else client.revoke_role
        fn(tid, args.user_id, args.role, source=users_pb2.ROLE_SOURCE_LOCAL, ctx=ADMIN)
    elif args.action == "assignments":

        def line(a: Any) -> None:
            src = "scim" if a.source == users_pb2.ROLE_SOURCE_SCIM else "local"
            print(f"{a.user_id}  {a.role:<32} {src}")

        _emit(
            args, client.list_assignments(tid, user_id=args.user or "", role=args.role or ""), line
        )
    return 0


def _parse_time(value: str) -> timestamp_pb2.Timestamp:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(dt)
    return out


_OUTCOMES = {
    "any": history_pb2.OUTCOME_FILTER_ANY,
    "success": history_pb2.OUTCOME_FILTER_SUCCESS,
    "error": history_pb2.OUTCOME_FILTER_ERROR,
}


def _status(value: str) -> tuple[int, int]:
    """`--status`: any, success, error, or an exact HTTP status: (outcome, status)."""
    if value in _OUTCOMES:
        return _OUTCOMES[value], 0
    if value.isascii() and value.isdigit() and 100 <= int(value) <= 599:
        return history_pb2.OUTCOME_FILTER_ANY, int(value)
    raise argparse.ArgumentTypeError(
        f"{value!r}: any, success, error or an HTTP status such as 401"
    )


def _who(op: history_pb2.Operation) -> str:
    """An admin's action names its actor; a SCIM request its token."""
    return f"by={op.actor}" if op.actor else f"token={op.token_id or '-'}"


def cmd_history(client: IdentityClient, args: argparse.Namespace) -> int:
    tid = _tenant_id(client, args.tenant)
    outcome, status = args.status
    resp = client.list_operations(
        tid,
        kinds=[KINDS[k] for k in args.kind or ()],
        resource_type=args.resource_type or "",
        outcome=outcome,
        status=status,
        request_id=args.request_id,
        since=args.since,
        until=args.until,
        page_size=args.limit,
    )

    def line(op: Any) -> None:
        err = f" {op.scim_type or ''} {op.detail}".rstrip() if op.status >= 400 else ""
        print(
            f"{_time(op.time)}  {op.method:<6} {KIND_NAMES.get(op.kind, '?'):<6} "
            f"{op.resource_type or '-':<8} {op.resource_id or '-':<36} {op.status} "
            f"{op.duration_ms:.1f}ms req={op.request_id or '-'} {_who(op)}{err}"
        )

    _emit(args, resp.operations, line)
    return 0


def _event_json(ev: changes_pb2.ChangeEvent) -> str:
    out: dict[str, object] = {
        "revision": ev.revision,
        "type": event_name(ev.type),
        "tenant_id": ev.tenant_id,
        "resource_type": ev.resource_type,
        "resource_id": ev.resource_id,
        "time": _time(ev.time),
        "actor": {"kind": ev.actor.kind, "id": ev.actor.id},
        "request_id": ev.request_id,
        "changed_attributes": list(ev.changed_attributes),
    }
    which = ev.WhichOneof("resource")
    out["resource"] = json_format.MessageToDict(getattr(ev, which)) if which else None
    if ev.HasField("membership"):
        out["membership"] = json_format.MessageToDict(ev.membership)
    return json.dumps(out, separators=(",", ":"), sort_keys=False)


def _event_line(ev: changes_pb2.ChangeEvent) -> str:
    actor = f"{ev.actor.kind}:{ev.actor.id}" if ev.actor.id else ev.actor.kind or "-"
    changed = f" changed={','.join(ev.changed_attributes)}" if ev.changed_attributes else ""
    return (
        f"{ev.revision}  {_time(ev.time)}  {event_name(ev.type):<22} {ev.resource_type:<6} "
        f"{ev.resource_id}  by={actor} req={ev.request_id or '-'}{changed}"
    )


def cmd_watch(client: IdentityClient, args: argparse.Namespace) -> int:
    # Its own channel, tuned to find a restarted service within seconds.
    with client.clone(options=RECONNECT_OPTIONS) as wc:
        w = wc.watch(
            args.tenant,
            since=args.from_revision,  # None: from now on, as IdentityClient.watch
            resource_types=args.resource_type or (),
            event_types=args.event_type or (),
        )
        # SIGTERM ends the stream like Ctrl-C: the last line printed is complete.
        signal.signal(signal.SIGTERM, lambda *_: w.close())
        fmt = _event_json if args.json or _json_out(args) else _event_line
        for ev in w:
            print(fmt(ev), flush=True)
    return 0


def cmd_policy(client: IdentityClient, args: argparse.Namespace) -> int:
    tid = _tenant_id(client, args.tenant)
    if args.action == "show":
        print(json_format.MessageToJson(client.get_policy(tid), indent=2))
        return 0
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    try:
        policy = json_format.Parse(text, policy_pb2.TenantPolicy())
    except json_format.ParseError as exc:
        print(f"identityctl: {args.file}: not a TenantPolicy: {exc}", file=sys.stderr)
        return 1
    saved = client.set_policy(tid, policy, ctx=ADMIN)
    print(json_format.MessageToJson(saved, indent=2))
    return 0


def cmd_user(client: IdentityClient, args: argparse.Namespace) -> int:
    tid = _tenant_id(client, args.tenant)
    if args.action == "jit":
        resp = client.jit_provision(
            tid,
            user_name=args.user_name or "",
            email=args.email or "",
            given_name=args.given_name or "",
            family_name=args.family_name or "",
            ctx=ADMIN,
        )
        print(f"{resp.user.meta.id}  {'created' if resp.created else 'found'}")
    elif args.action == "list":

        def line(u: Any) -> None:
            state = "active" if u.active else "inactive"
            print(f"{u.meta.id}  {u.user_name:<40} {state:<8} {u.managed_by}")

        _emit(args, client.iter_users(tid, page_size=500), line)
    elif args.action == "show":
        u = client.get_user(tid, args.user_id)
        if _json_out(args):
            print(json.dumps(_as_dict(u), indent=2))
        else:
            _print_user(u)
    elif args.action == "delete":
        outcome = client.delete_user(tid, args.user_id, hard=args.hard, ctx=ADMIN)
        print("deleted" if outcome.deleted else "deactivated (the tenant's policy keeps users)")
    return 0


def _print_user(u: users_pb2.User) -> None:
    print(f"id:           {u.meta.id}")
    print(f"userName:     {u.user_name}")
    if u.display_name:
        print(f"displayName:  {u.display_name}")
    if u.name.given_name or u.name.family_name:
        print(f"name:         {u.name.given_name} {u.name.family_name}".rstrip())
    if u.external_id:
        print(f"externalId:   {u.external_id}")
    print(f"active:       {'yes' if u.active else 'no'}")
    print(f"managed by:   {u.managed_by}")
    print(f"created:      {_time(u.meta.created)}  modified: {_time(u.meta.last_modified)}")
    for e in u.emails:
        print(f"email:        {e.value}{' (primary)' if e.primary else ''}")
    for g in u.groups:
        print(f"group:        {g.id}  {g.display_name}")
    for a in u.role_assignments:
        src = "scim" if a.source == users_pb2.ROLE_SOURCE_SCIM else "local"
        print(f"role:         {a.role}  ({src})")


def cmd_group(client: IdentityClient, args: argparse.Namespace) -> int:
    tid = _tenant_id(client, args.tenant)
    if args.action == "list":
        _emit(
            args,
            client.iter_groups(tid, page_size=500),
            lambda g: print(f"{g.meta.id}  {g.display_name:<40} members={g.member_count}"),
        )
    elif args.action == "show":
        g = client.get_group(tid, args.group_id, include_members=False)
        members = list(client.list_members(tid, g.meta.id))
        if _json_out(args):
            doc = _as_dict(g)
            doc["members"] = [_as_dict(m) for m in members]
            print(json.dumps(doc, indent=2))
            return 0
        print(f"id:           {g.meta.id}")
        print(f"displayName:  {g.display_name}")
        if g.external_id:
            print(f"externalId:   {g.external_id}")
        print(f"created:      {_time(g.meta.created)}  modified: {_time(g.meta.last_modified)}")
        print(f"members:      {g.member_count}")
        for m in members:
            kind = "group" if m.type == groups_pb2.MEMBER_TYPE_GROUP else "user"
            print(f"  {kind:<5} {m.value}  {m.display}")
    return 0


class VersionAction(argparse.Action):
    """--version: the installed distribution's version, looked up only when asked
    (identityctl's, and scim-gateway's)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib import metadata  # noqa: PLC0415  # --version only

        try:
            version = metadata.version("scim-identity-client")
        except metadata.PackageNotFoundError:
            try:
                version = metadata.version("scim-identity")
            except metadata.PackageNotFoundError:
                version = "unknown"
        print(f"{parser.prog} {version}")  # stdout, as argparse's own version action
        parser.exit()


def _sub(
    parent: Any, name: str, help: str, *, output: bool = False, **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand with its help (in the list and on its own --help) and, for the
    commands that list or show, `-o text|json`."""
    parents = [_OUTPUT] if output else []
    # (the ignore below) `parent` is argparse's private _SubParsersAction, typed Any here
    return parent.add_parser(  # type: ignore[no-any-return]
        name, help=help, description=help[0].upper() + help[1:] + ".", parents=parents, **kwargs
    )


_OUTPUT = argparse.ArgumentParser(add_help=False)
_OUTPUT.add_argument(
    "-o",
    "--output",
    choices=["text", "json"],
    default="text",
    help="text (default): one line per item; json: a JSON array (show: an object) with the "
    "contract's field names",
)


def cmd_admin_link(client: IdentityClient, args: argparse.Namespace) -> int:
    if bool(args.tenant) == args.operator:
        raise _Refused("name a TENANT, or give --operator for a link to every tenant")
    link = client.create_admin_link(
        args.tenant, operator=args.operator, subject=args.subject or ADMIN.actor_id, ctx=ADMIN
    )
    who = "an operator (every tenant)" if args.operator else f"tenant {link.principal.tenant_name}"
    print(
        f"sign-in link for {who}: valid once, until {_time(link.expires)}",
        file=sys.stderr,
    )
    print(admin_sign_in_url(args.admin_url, link.secret))
    return 0


def cmd_admin_session(client: IdentityClient, args: argparse.Namespace) -> int:
    """A session made and redeemed at once: its secret is the admin API's bearer."""
    if bool(args.tenant) == args.operator:
        raise _Refused("name a TENANT, or give --operator for a session on every tenant")
    link = client.create_admin_link(
        args.tenant, operator=args.operator, subject=args.subject or ADMIN.actor_id, ctx=ADMIN
    )
    session = client.redeem_admin_link(link.secret, ctx=ADMIN)
    who = "an operator (every tenant)" if args.operator else f"tenant {link.principal.tenant_name}"
    print(
        f"admin API bearer for {who}, until {_time(session.expires)} "
        "(send it as 'Authorization: Bearer ...'; DELETE /api/v1/session ends it)",
        file=sys.stderr,
    )
    print(session.secret)
    return 0


def _url_option(
    parser: argparse.ArgumentParser, flag: str, env: str, local: str, what: str
) -> None:
    """A public URL of another component, shown to the admin (`make run`'s by default)."""
    parser.add_argument(
        flag,
        default=os.environ.get(env) or local,
        help=f"the {what}'s public URL, without any /scim/v2 (env {env}; default {local}, "
        "as `make run` serves it)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="identityctl",
        description="Administer the identity service. Tenants are named by name or id everywhere.",
        epilog="Every command has --help. Commands that list or show take -o json.",
    )
    p.add_argument("--version", action=VersionAction)
    p.add_argument(
        "--target",
        default=os.environ.get("IDENTITY_TARGET", "127.0.0.1:50051"),
        help="identity service host:port (env IDENTITY_TARGET)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    env = os.environ
    p.add_argument(
        "--token",
        default=None,
        help="service credential secret (env IDENTITY_TOKEN or IDENTITY_TOKEN_FILE; "
        "prefer those: a flag shows in the process list)",
    )
    p.add_argument(
        "--tls-ca-file",
        default=env.get("IDENTITY_TLS_CA_FILE") or None,
        help="PEM CA that signed the core's certificate: use TLS (env IDENTITY_TLS_CA_FILE)",
    )
    p.add_argument(
        "--tls-cert-file",
        default=env.get("IDENTITY_TLS_CERT_FILE") or None,
        help="PEM client certificate for mTLS (env IDENTITY_TLS_CERT_FILE)",
    )
    p.add_argument(
        "--tls-key-file",
        default=env.get("IDENTITY_TLS_KEY_FILE") or None,
        help="PEM client key for mTLS (env IDENTITY_TLS_KEY_FILE)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tenant_help = "tenant name or id"

    t = _sub(
        sub,
        "tenant",
        "create, list, show, update, activate, deactivate tenants; delete a connector",
    )
    ts = t.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = _sub(ts, "create", "create a tenant; prints its id")
    c.add_argument("name", help="the tenant's name (unique; used in SCIM URLs)")
    c.add_argument("--display-name", help="a human-readable name (default: the name)")
    c.add_argument(
        "--inactive",
        action="store_true",
        help="start with the SCIM connector inactive (every SCIM request refused) until "
        "`tenant activate`, so rules and mappings are set first",
    )
    _sub(ts, "list", "list every tenant", output=True)
    sh = _sub(ts, "show", "show one tenant, and the SCIM base URLs to give its IdP", output=True)
    sh.add_argument("tenant", help=tenant_help)
    _url_option(sh, "--scim-base-url", "IDENTITY_SCIM_BASE_URL", LOCAL_GATEWAY, "SCIM gateway")
    _sub(ts, "activate", "let the tenant's SCIM connector in again").add_argument(
        "tenant", help=tenant_help
    )
    _sub(ts, "deactivate", "refuse every SCIM request of the tenant").add_argument(
        "tenant", help=tenant_help
    )
    u = _sub(ts, "update", "change a tenant's display name")
    u.add_argument("tenant", help=tenant_help)
    u.add_argument("--display-name", required=True, help="the new display name")
    dc = _sub(
        ts,
        "delete-connector",
        "revoke every token, clear the policy's rules, schemas and mappings, deactivate; "
        "users and groups are kept unless --purge",
    )
    dc.add_argument("tenant", help=tenant_help)
    dc.add_argument("--purge", action="store_true", help="also delete every user and group")
    dc.add_argument("--yes", action="store_true", help="confirm --purge")
    t.set_defaults(func=cmd_tenant)

    k = _sub(sub, "token", "issue, rotate, list, revoke a tenant's SCIM API tokens")
    ks = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ("issue", "rotate"):
        i = _sub(
            ks,
            action,
            f"{action} a token; prints the secret alone on its last line (shown once)",
        )
        i.add_argument("tenant", help=tenant_help)
        i.add_argument("--description", help="a note to tell tokens apart")
        i.add_argument(
            "--scope",
            choices=sorted(SCOPES),
            default="full" if action == "issue" else None,
            help="default: full (rotate: the revoked token's scope)",
        )
        i.add_argument("--expires-in-days", type=int, help="default: never expires")
        if action == "rotate":
            i.add_argument(
                "--revoke",
                metavar="TOKEN_ID",
                help="the token to revoke in the same transaction as the new one is issued "
                "(default: the tenant's oldest live token)",
            )
    lst = _sub(ks, "list", "list a tenant's tokens (never their secrets)", output=True)
    lst.add_argument("tenant", help=tenant_help)
    lst.add_argument("--all", action="store_true", help="include revoked and expired tokens")
    r = _sub(ks, "revoke", "revoke a token at once")
    r.add_argument("tenant", help=tenant_help)
    r.add_argument("token_id", help="the token's id (token list)")
    k.set_defaults(func=cmd_token)

    ro = _sub(sub, "role", "define roles and assign them")
    ros = ro.add_subparsers(dest="action", required=True, metavar="ACTION")
    rc = _sub(ros, "create", "define a role")
    rc.add_argument("tenant", help=tenant_help)
    rc.add_argument("role", help="the role's name")
    rc.add_argument("--description", help="what the role is for")
    _sub(ros, "list", "list a tenant's roles", output=True).add_argument("tenant", help=tenant_help)
    rd = _sub(ros, "delete", "delete a role and its assignments")
    rd.add_argument("tenant", help=tenant_help)
    rd.add_argument("role", help="the role's name")
    for action in ("assign", "revoke"):
        ra = _sub(ros, action, f"{action} a local role")
        ra.add_argument("tenant", help=tenant_help)
        ra.add_argument("user_id", help="the user's id")
        ra.add_argument("role", help="the role's name")
    rl = _sub(ros, "assignments", "list role assignments", output=True)
    rl.add_argument("tenant", help=tenant_help)
    rl.add_argument("--user", help="only this user's (id)")
    rl.add_argument("--role", help="only this role's")
    ro.set_defaults(func=cmd_role)

    po = _sub(sub, "policy", "show or set the tenant's provisioning policy")
    pos = po.add_subparsers(dest="action", required=True, metavar="ACTION")
    _sub(pos, "show", "print the policy as JSON", output=True).add_argument(
        "tenant", help=tenant_help
    )
    ps = _sub(pos, "set", "replace the policy with a TenantPolicy JSON file (- for stdin)")
    ps.add_argument("tenant", help=tenant_help)
    ps.add_argument("file", help="a TenantPolicy JSON file, or - for stdin")
    po.set_defaults(func=cmd_policy)

    us = _sub(sub, "user", "JIT-provision, list, show or delete users")
    uss = us.add_subparsers(dest="action", required=True, metavar="ACTION")
    uj = _sub(uss, "jit", "find or create a user as a first sign-in would")
    uj.add_argument("tenant", help=tenant_help)
    uj.add_argument("--user-name", help="the userName to find or create")
    uj.add_argument("--email", help="the sign-in's email")
    uj.add_argument("--given-name", help="the sign-in's given name")
    uj.add_argument("--family-name", help="the sign-in's family name")
    _sub(uss, "list", "list every user of a tenant", output=True).add_argument(
        "tenant", help=tenant_help
    )
    ush = _sub(
        uss, "show", "show one user: attributes, groups, roles with their source", output=True
    )
    ush.add_argument("tenant", help=tenant_help)
    ush.add_argument("user_id", help="the user's id")
    ud = _sub(uss, "delete", "delete a user (or deactivate, as the tenant's policy says)")
    ud.add_argument("tenant", help=tenant_help)
    ud.add_argument("user_id", help="the user's id")
    ud.add_argument("--hard", action="store_true", help="delete even if the policy deactivates")
    us.set_defaults(func=cmd_user)

    gr = _sub(sub, "group", "list groups or show one with its members")
    grs = gr.add_subparsers(dest="action", required=True, metavar="ACTION")
    _sub(grs, "list", "list every group of a tenant", output=True).add_argument(
        "tenant", help=tenant_help
    )
    gsh = _sub(grs, "show", "show one group and its members", output=True)
    gsh.add_argument("tenant", help=tenant_help)
    gsh.add_argument("group_id", help="the group's id")
    gr.set_defaults(func=cmd_group)

    al = _sub(
        sub,
        "admin-link",
        "print a one-time admin console sign-in URL (valid 15 minutes) on the last line",
    )
    al.add_argument(
        "tenant", nargs="?", help="tenant name or id: the link signs in that tenant's admin"
    )
    al.add_argument("--operator", action="store_true", help="an operator link: every tenant")
    al.add_argument("--subject", help="who the link is for (the actor in the history)")
    _url_option(al, "--admin-url", "IDENTITY_ADMIN_URL", LOCAL_CONSOLE, "admin console")
    al.set_defaults(func=cmd_admin_link)

    asn = _sub(
        sub,
        "admin-session",
        "print an admin session's secret, the admin API's bearer credential, on the last line",
    )
    asn.add_argument(
        "tenant", nargs="?", help="tenant name or id: a session of that tenant's admin"
    )
    asn.add_argument("--operator", action="store_true", help="an operator's session: every tenant")
    asn.add_argument("--subject", help="who uses it (the actor in the history)")
    asn.set_defaults(func=cmd_admin_session)

    h = _sub(sub, "history", "list SCIM operations, newest first", output=True)
    h.add_argument("tenant", help=tenant_help)
    h.add_argument("--kind", action="append", choices=sorted(KINDS), help="only these kinds")
    h.add_argument("--resource-type", choices=["User", "Group", "Bulk"], help="only these")
    h.add_argument(
        "--status",
        type=_status,
        default="any",
        metavar="{any,success,error,CODE}",
        help="success (< 400), error (>= 400) or an exact HTTP status, e.g. 401",
    )
    h.add_argument("--request-id", default="", help="only this request's operations")
    h.add_argument("--since", type=_parse_time, help="ISO 8601, inclusive")
    h.add_argument("--until", type=_parse_time, help="ISO 8601, exclusive")
    h.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    h.set_defaults(func=cmd_history)

    w = _sub(
        sub,
        "watch",
        "print the tenant's changes as they happen, one per line; resumes across restarts",
        output=True,
    )
    w.add_argument("tenant", help=tenant_help)
    w.add_argument(
        "--from",
        dest="from_revision",
        type=int,
        metavar="N",
        help="print the events after revision N first (default: only changes from now on, "
        "as IdentityClient.watch; 0: every event still kept)",
    )
    w.add_argument("--json", action="store_true", help="one JSON object per line (-o json)")
    w.add_argument("--resource-type", action="append", help="only these (User, Group, ...)")
    w.add_argument("--event-type", action="append", help="only these (user.created, ...)")
    w.set_defaults(func=cmd_watch)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[IdentityClient, argparse.Namespace], int] = args.func
    try:
        token = args.token or secret(os.environ, "IDENTITY_TOKEN") or None
        client = IdentityClient(
            args.target,
            timeout=args.timeout,
            token=token,
            tls_ca_file=args.tls_ca_file,
            tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_key_file,
        )
    except SecretSettingError as exc:
        print(f"identityctl: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"identityctl: TLS settings: {exc}", file=sys.stderr)
        return 1
    try:
        with client:
            # One command, one connection: ride out a connection attempt that fails
            # (a service still starting, a TLS handshake cut short on a loaded host)
            # as gRPC retries it, for up to --timeout; then "cannot reach".
            client.wait_ready(args.timeout)
            return func(client, args)
    except Unavailable as exc:
        print(
            f"identityctl: cannot reach the identity service at {args.target}: {exc}",
            file=sys.stderr,
        )
        return 1
    except (IdentityError, _Refused) as exc:
        print(f"identityctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
