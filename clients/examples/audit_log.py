"""Print one audit line per change of a tenant, as it happens.

    python clients/examples/audit_log.py --target 127.0.0.1:50051 --tenant demo
    python clients/examples/audit_log.py --tenant demo --from 0 --checkpoint audit.rev

Each line: time, revision, event, resource, who did it, request id, and the
attributes that changed. A tenant that does not exist yet is waited for (said once
on stderr), so the subscriber may start before anyone creates its tenant. With
--checkpoint FILE the last revision printed is kept in FILE (replaced atomically),
and the next run continues after it.
The stream resumes by itself when the identity service restarts.
Stops cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import UTC

from scim_identity_client import FileCheckpoint, IdentityClient, NotFound, OutOfRange, event_name
from scim_identity_client.types import ChangeEvent, Tenant

#: Seconds between looks for a tenant that does not exist yet, growing to the last.
TENANT_WAIT_SECONDS = (0.5, 1.0, 2.0, 5.0)


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


def wait_for_tenant(client: IdentityClient, ref: str, stop: threading.Event) -> Tenant | None:
    """The tenant `ref`, looked up until it exists (None when `stop` is set first)."""
    attempt = 0
    while not stop.is_set():
        try:
            return client.get_tenant(ref)
        except NotFound:
            if attempt == 0:
                print(
                    f"audit_log: tenant {ref} does not exist yet; waiting for it "
                    f"(identityctl tenant create {ref})",
                    file=sys.stderr,
                    flush=True,
                )
            stop.wait(TENANT_WAIT_SECONDS[min(attempt, len(TENANT_WAIT_SECONDS) - 1)])
            attempt += 1
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=os.environ.get("IDENTITY_TARGET", "127.0.0.1:50051"))
    p.add_argument("--tenant", default="demo", help="tenant name or id")
    p.add_argument("--from", dest="since", type=int, help="start after this revision")
    p.add_argument("--checkpoint", help="file that keeps the last revision printed")
    args = p.parse_args(argv)

    options = [("grpc.max_reconnect_backoff_ms", 5000), ("grpc.initial_reconnect_backoff_ms", 200)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # A secured core: the same variables as identityctl (IDENTITY_TOKEN or
    # IDENTITY_TOKEN_FILE, IDENTITY_TLS_*).
    with IdentityClient.from_env(target=args.target, options=options) as client:
        tenant = wait_for_tenant(client, args.tenant, stop)
        if tenant is None:
            return 0
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
        if stop.is_set():
            watch.close()
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
