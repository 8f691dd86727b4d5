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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf import json_format, timestamp_pb2

from identity.env import SecretSettingError, secret
from identity.v1 import changes_pb2, history_pb2, policy_pb2, tenants_pb2, users_pb2

from ._common import RECONNECT_OPTIONS, CallContext
from .client import IdentityClient
from .errors import IdentityError, Unavailable
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


def cmd_tenant(client: IdentityClient, args: argparse.Namespace) -> int:
    if args.action == "create":
        t = client.create_tenant(args.name, display_name=args.display_name or "", ctx=ADMIN)
        print(t.id)
    elif args.action == "list":
        for t in client.list_tenants():
            _print_tenant(t)
    elif args.action == "show":
        t = client.get_tenant(args.tenant)
        _print_tenant(t)
        if t.display_name != t.name:
            print(f"display name: {t.display_name}")
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
            # fails on the next request.
            rotated = client.rotate_token(
                args.tenant,
                revoke_token_id=args.revoke or "",
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
        for t in client.list_tokens(args.tenant, include_inactive=args.all):
            _print_token(t)
    elif args.action == "revoke":
        _print_token(client.revoke_token(args.tenant, args.token_id, ctx=ADMIN))
    return 0


def cmd_role(client: IdentityClient, args: argparse.Namespace) -> int:
    tid = _tenant_id(client, args.tenant)
    if args.action == "create":
        r = client.create_role(tid, args.role, description=args.description or "", ctx=ADMIN)
        print(r.name)
    elif args.action == "list":
        for r in client.list_roles(tid):
            print(f"{r.name:<32} {r.description}")
    elif args.action == "delete":
        client.delete_role(tid, args.role, ctx=ADMIN)
    elif args.action in ("assign", "revoke"):
        fn = client.assign_role if args.action == "assign" else client.revoke_role
        fn(tid, args.user_id, args.role, source=users_pb2.ROLE_SOURCE_LOCAL, ctx=ADMIN)
    elif args.action == "assignments":
        for a in client.list_assignments(tid, user_id=args.user or "", role=args.role or ""):
            src = "scim" if a.source == users_pb2.ROLE_SOURCE_SCIM else "local"
            print(f"{a.user_id}  {a.role:<32} {src}")
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


def cmd_history(client: IdentityClient, args: argparse.Namespace) -> int:
    tid = _tenant_id(client, args.tenant)
    outcome = {
        "any": history_pb2.OUTCOME_FILTER_ANY,
        "success": history_pb2.OUTCOME_FILTER_SUCCESS,
        "error": history_pb2.OUTCOME_FILTER_ERROR,
    }[args.status]
    resp = client.list_operations(
        tid,
        kinds=[KINDS[k] for k in args.kind or ()],
        resource_type=args.resource_type or "",
        outcome=outcome,
        since=args.since,
        until=args.until,
        page_size=args.limit,
    )
    for op in resp.operations:
        err = f" {op.scim_type or ''} {op.detail}".rstrip() if op.status >= 400 else ""
        print(
            f"{_time(op.time)}  {op.method:<6} {KIND_NAMES.get(op.kind, '?'):<6} "
            f"{op.resource_type or '-':<8} {op.resource_id or '-':<36} {op.status} "
            f"{op.duration_ms:.1f}ms req={op.request_id or '-'} token={op.token_id or '-'}{err}"
        )
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
    tenant = client.get_tenant(args.tenant)
    since = tenant.revision if args.from_revision is None else args.from_revision
    # Its own channel, tuned to find a restarted service within seconds.
    with client.clone(options=RECONNECT_OPTIONS) as wc:
        w = wc.watch(
            tenant.id,
            since=since,
            resource_types=args.resource_type or (),
            event_types=args.event_type or (),
        )
        # SIGTERM ends the stream like Ctrl-C: the last line printed is complete.
        signal.signal(signal.SIGTERM, lambda *_: w.close())
        fmt = _event_json if args.json else _event_line
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
        cursor = ""
        while True:
            page = client.list_users(tid, cursor=cursor, count=500)
            for u in page.users:
                state = "active" if u.active else "inactive"
                print(f"{u.meta.id}  {u.user_name:<40} {state:<8} {u.managed_by}")
            if not page.next_cursor:
                break
            cursor = page.next_cursor
    elif args.action == "delete":
        outcome = client.delete_user(tid, args.user_id, hard=args.hard, ctx=ADMIN)
        print("deleted" if outcome.deleted else "deactivated (the tenant's policy keeps users)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="identityctl", description="Administer the identity service.")
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
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "tenant",
        help="create, list, show, update, activate, deactivate tenants; delete a connector",
    )
    ts = t.add_subparsers(dest="action", required=True)
    c = ts.add_parser("create", help="create a tenant; prints its id")
    c.add_argument("name")
    c.add_argument("--display-name")
    ts.add_parser("list")
    for action in ("show", "activate", "deactivate"):
        ts.add_parser(action).add_argument("tenant", help="name or id")
    u = ts.add_parser("update")
    u.add_argument("tenant")
    u.add_argument("--display-name", required=True)
    dc = ts.add_parser(
        "delete-connector",
        help="revoke every token, clear the policy's rules, schemas and mappings, deactivate; "
        "users and groups are kept unless --purge",
    )
    dc.add_argument("tenant", help="name or id")
    dc.add_argument("--purge", action="store_true", help="also delete every user and group")
    dc.add_argument("--yes", action="store_true", help="confirm --purge")
    t.set_defaults(func=cmd_tenant)

    k = sub.add_parser("token", help="issue, rotate, list, revoke API tokens")
    ks = k.add_subparsers(dest="action", required=True)
    for action in ("issue", "rotate"):
        i = ks.add_parser(action, help="prints the secret alone on its last line")
        i.add_argument("tenant", help="name or id")
        i.add_argument("--description")
        i.add_argument(
            "--scope",
            choices=sorted(SCOPES),
            default="full" if action == "issue" else None,
            help="default: full (rotate: the revoked token's scope)",
        )
        i.add_argument("--expires-in-days", type=int)
        if action == "rotate":
            i.add_argument(
                "--revoke",
                metavar="TOKEN_ID",
                help="the token to revoke in the same transaction as the new one is issued",
            )
    lst = ks.add_parser("list")
    lst.add_argument("tenant")
    lst.add_argument("--all", action="store_true", help="include revoked and expired tokens")
    r = ks.add_parser("revoke")
    r.add_argument("tenant")
    r.add_argument("token_id")
    k.set_defaults(func=cmd_token)

    ro = sub.add_parser("role", help="define roles and assign them")
    ros = ro.add_subparsers(dest="action", required=True)
    rc = ros.add_parser("create")
    rc.add_argument("tenant")
    rc.add_argument("role")
    rc.add_argument("--description")
    ros.add_parser("list").add_argument("tenant")
    rd = ros.add_parser("delete")
    rd.add_argument("tenant")
    rd.add_argument("role")
    for action in ("assign", "revoke"):
        ra = ros.add_parser(action, help=f"{action} a local role")
        ra.add_argument("tenant")
        ra.add_argument("user_id")
        ra.add_argument("role")
    rl = ros.add_parser("assignments")
    rl.add_argument("tenant")
    rl.add_argument("--user")
    rl.add_argument("--role")
    ro.set_defaults(func=cmd_role)

    po = sub.add_parser("policy", help="show or set the tenant's provisioning policy")
    pos = po.add_subparsers(dest="action", required=True)
    pos.add_parser("show").add_argument("tenant")
    ps = pos.add_parser(
        "set", help="replace the policy with a TenantPolicy JSON file (- for stdin)"
    )
    ps.add_argument("tenant")
    ps.add_argument("file")
    po.set_defaults(func=cmd_policy)

    us = sub.add_parser("user", help="JIT-provision, list or delete users")
    uss = us.add_subparsers(dest="action", required=True)
    uj = uss.add_parser("jit", help="find or create a user as a first sign-in would")
    uj.add_argument("tenant")
    uj.add_argument("--user-name")
    uj.add_argument("--email")
    uj.add_argument("--given-name")
    uj.add_argument("--family-name")
    uss.add_parser("list").add_argument("tenant")
    ud = uss.add_parser("delete")
    ud.add_argument("tenant")
    ud.add_argument("user_id")
    ud.add_argument("--hard", action="store_true", help="delete even if the policy deactivates")
    us.set_defaults(func=cmd_user)

    h = sub.add_parser("history", help="list SCIM operations, newest first")
    h.add_argument("tenant")
    h.add_argument("--kind", action="append", choices=sorted(KINDS))
    h.add_argument("--resource-type", choices=["User", "Group", "Bulk"])
    h.add_argument("--status", choices=["any", "success", "error"], default="any")
    h.add_argument("--since", type=_parse_time, help="ISO 8601, inclusive")
    h.add_argument("--until", type=_parse_time, help="ISO 8601, exclusive")
    h.add_argument("--limit", type=int, default=100)
    h.set_defaults(func=cmd_history)

    w = sub.add_parser(
        "watch",
        help="print the tenant's changes as they happen, one per line; resumes across restarts",
    )
    w.add_argument("tenant", help="name or id")
    w.add_argument(
        "--from",
        dest="from_revision",
        type=int,
        metavar="N",
        help="print the events after revision N first (default: only new ones; 0: all kept)",
    )
    w.add_argument("--json", action="store_true", help="one JSON object per line")
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
            return func(client, args)
    except Unavailable as exc:
        print(
            f"identityctl: cannot reach the identity service at {args.target}: {exc}",
            file=sys.stderr,
        )
        return 1
    except IdentityError as exc:
        print(f"identityctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
