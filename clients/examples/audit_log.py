"""Print one audit line per change of a tenant, as it happens.

    python clients/examples/audit_log.py --target 127.0.0.1:50051 --tenant demo
    python clients/examples/audit_log.py --tenant demo --from 0 --checkpoint audit.rev

Each line: time, revision, event, resource, who did it, request id, and the
attributes that changed. With --checkpoint FILE the last revision printed is
kept in FILE (replaced atomically), and the next run continues after it.
The stream resumes by itself when the identity service restarts.
Stops cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import UTC

from identity_client import FileCheckpoint, IdentityClient, OutOfRange, event_name
from identity_client.types import ChangeEvent


def audit_line(ev: ChangeEvent) -> str:
    when = ev.time.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    who = f"{ev.actor.kind}:{ev.actor.id}" if ev.actor.id else ev.actor.kind or "unknown"
    which = ev.WhichOneof("resource")
    name = ""
    if which == "user":
        name = ev.user.user_name
    elif which == "group":
        name = ev.group.display_name
    elif which == "assignment":
        name = ev.assignment.role
    elif which == "role":
        name = ev.role.name
    elif which == "tenant":
        name = ev.tenant.name
    changed = f" changed={','.join(ev.changed_attributes)}" if ev.changed_attributes else ""
    members = ""
    if ev.HasField("membership"):
        members = f" members={','.join(m.value for m in ev.membership.members)}"
    return (
        f"{when} rev={ev.revision} {event_name(ev.type)} {ev.resource_type}/{ev.resource_id}"
        f"{' ' + repr(name) if name else ''} by={who} req={ev.request_id or '-'}{changed}{members}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=os.environ.get("IDENTITY_TARGET", "127.0.0.1:50051"))
    p.add_argument("--tenant", default="demo", help="tenant name or id")
    p.add_argument("--from", dest="since", type=int, help="start after this revision")
    p.add_argument("--checkpoint", help="file that keeps the last revision printed")
    args = p.parse_args(argv)

    options = [("grpc.max_reconnect_backoff_ms", 5000), ("grpc.initial_reconnect_backoff_ms", 200)]
    # A secured core: the same variables as identityctl (IDENTITY_TOKEN, IDENTITY_TLS_*).
    env = os.environ
    with IdentityClient(
        args.target,
        options=options,
        token=env.get("IDENTITY_TOKEN") or None,
        tls_ca_file=env.get("IDENTITY_TLS_CA_FILE") or None,
        tls_cert_file=env.get("IDENTITY_TLS_CERT_FILE") or None,
        tls_key_file=env.get("IDENTITY_TLS_KEY_FILE") or None,
    ) as client:
        tenant = client.get_tenant(args.tenant)
        checkpoint = FileCheckpoint(args.checkpoint) if args.checkpoint else None
        since = args.since
        if since is None and (checkpoint is None or checkpoint.load() is None):
            since = tenant.revision  # a fresh audit starts with the next change
        watch = client.watch(tenant.id, since=since, checkpoint=checkpoint)
        start = since if since is not None else checkpoint.load() if checkpoint else 0
        print(
            f"audit_log: watching {tenant.name} after revision {start}", file=sys.stderr, flush=True
        )
        signal.signal(signal.SIGTERM, lambda *_: watch.close())
        signal.signal(signal.SIGINT, lambda *_: watch.close())
        try:
            for ev in watch:
                print(audit_line(ev), flush=True)
        except OutOfRange as exc:
            print(
                f"audit_log: events after revision {watch.cursor} are gone "
                f"(oldest kept: {exc.detail.oldest_revision}); restart with --from "
                f"{exc.detail.oldest_revision - 1} to continue, accepting the hole",
                file=sys.stderr,
            )
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
