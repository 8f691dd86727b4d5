"""Initial sync as Okta and Entra ID do it, end to end through the SCIM gateway.

Used by `bench.gateway` in its largest-size phase, into a fresh tenant of the database
that holds the seeded users: N users by `POST /Users` (one request per user), then
G = N / GROUP_SIZE groups by `POST /Groups` (no members), then the memberships by
`PATCH /Groups/{id}` with `{"op":"add","path":"members","value":[... up to
PATCH_BATCH ...]}`; every phase over PROCESSES x CONNECTIONS keep-alive connections
(`bench.loadgen.run_jobs`), a group's PATCHes in order on one connection. Each user
joins MEMBERSHIPS_PER_USER different groups (about GROUP_SIZE x MEMBERSHIPS_PER_USER
members per group). Afterwards the database is checked: N users, G groups, every
membership stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .loadgen import PATCH_SCHEMA, USER_SCHEMA, Job, Outcome, run_jobs

GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
USERS_FULL = 10_000
USERS_QUICK = 1_000
GROUP_SIZE = 100
MEMBERSHIPS_PER_USER = 2
PATCH_BATCH = 100
PROCESSES = 2
CONNECTIONS = 4


@dataclass
class SyncResult:
    users: int
    groups: int
    memberships: int
    #: "users", "groups", "members": the outcome of each phase.
    phases: dict[str, Outcome] = field(default_factory=dict)
    #: Stored after the sync (database check): users, groups, memberships.
    stored: tuple[int, int, int] = (0, 0, 0)

    @property
    def seconds(self) -> float:
        return sum(o.elapsed for o in self.phases.values())

    @property
    def errors(self) -> int:
        return sum(o.errors for o in self.phases.values())


def sync_user(i: int) -> dict[str, object]:
    """A user as Okta's and Entra ID's provisioning POST it."""
    mail = f"sync{i:06d}@example.com"
    return {
        "schemas": [USER_SCHEMA],
        "userName": mail,
        "externalId": f"sync-ext-{i}",
        "name": {"givenName": "Sync", "familyName": f"User {i}"},
        "displayName": f"Sync User {i}",
        "emails": [{"primary": True, "value": mail, "type": "work"}],
        "active": True,
    }


def memberships(n: int, groups: int) -> list[list[int]]:
    """Users of each group: user i joins group i % G and another one (never the same)."""
    out: list[list[int]] = [[] for _ in range(groups)]
    for i in range(n):
        first = i % groups
        out[first].append(i)
        for k in range(1, min(MEMBERSHIPS_PER_USER, groups)):
            # k-th extra group: a shift of 1 .. G-1 from the first, varying with i.
            shift = 1 + ((i // groups) * k + k - 1) % (groups - 1)
            out[(first + shift) % groups].append(i)
    return out


def run_sync(port: int, prefix: str, token: str, n: int, *, url: str, tenant_pk: int) -> SyncResult:
    groups = max(2, n // GROUP_SIZE)
    plan = memberships(n, groups)
    result = SyncResult(n, groups, sum(len(m) for m in plan))

    def send(jobs: list[Job], want_ids: bool) -> tuple[Outcome, list[str]]:
        return run_jobs(
            "127.0.0.1",
            port,
            token,
            jobs,
            processes=PROCESSES,
            connections=CONNECTIONS,
            want_ids=want_ids,
        )

    user_jobs = [
        Job(i, "POST", f"{prefix}/Users", json.dumps(sync_user(i)).encode(), 201) for i in range(n)
    ]
    result.phases["users"], user_ids = send(user_jobs, True)
    group_jobs = [
        Job(
            g,
            "POST",
            f"{prefix}/Groups",
            json.dumps(
                {
                    "schemas": [GROUP_SCHEMA],
                    "displayName": f"Sync Group {g:04d}",
                    "externalId": f"sync-group-{g}",
                    "members": [],
                }
            ).encode(),
            201,
        )
        for g in range(groups)
    ]
    result.phases["groups"], group_ids = send(group_jobs, True)
    member_jobs = []
    for g, members in enumerate(plan):
        if not group_ids[g]:
            continue
        ids = [user_ids[i] for i in members if user_ids[i]]
        for lo in range(0, len(ids), PATCH_BATCH):
            body = {
                "schemas": [PATCH_SCHEMA],
                "Operations": [
                    {
                        "op": "add",
                        "path": "members",
                        "value": [{"value": uid} for uid in ids[lo : lo + PATCH_BATCH]],
                    }
                ],
            }
            member_jobs.append(
                Job(g, "PATCH", f"{prefix}/Groups/{group_ids[g]}", json.dumps(body).encode(), 200)
            )
    result.phases["members"], _ = send(member_jobs, False)
    result.stored = stored(url, tenant_pk)
    return result


def stored(url: str, tenant_pk: int) -> tuple[int, int, int]:
    """Users, groups and memberships the tenant has, read from the database."""
    from sqlalchemy import create_engine, text

    from identity_service.storage.db import normalise_url

    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            t = {"t": tenant_pk}
            users = conn.execute(text("SELECT count(*) FROM users WHERE tenant_pk = :t"), t)
            groups = conn.execute(text("SELECT count(*) FROM groups WHERE tenant_pk = :t"), t)
            members = conn.execute(
                text(
                    "SELECT count(*) FROM group_members m JOIN groups g ON g.pk = m.group_pk "
                    "WHERE g.tenant_pk = :t"
                ),
                t,
            )
            return (int(users.scalar_one()), int(groups.scalar_one()), int(members.scalar_one()))
    finally:
        engine.dispose()


def check(r: SyncResult) -> str:
    """ "" when the database holds everything the sync sent, else what is missing."""
    want = (r.users, r.groups, r.memberships)
    if r.stored == want:
        return ""
    return f"stored users/groups/memberships {r.stored}, sent {want}"


def table(r: SyncResult, baseline_b: float) -> list[str]:
    """Markdown rows: one per phase plus the whole sync."""
    lines = [
        "| phase | requests | items | seconds | items/s | req/s | req/s / B | p50 ms | p99 ms "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = (
        ("users", "`POST /Users`", f"{r.users:,} users", r.users),
        ("groups", "`POST /Groups`", f"{r.groups:,} groups", r.groups),
        (
            "members",
            f"`PATCH /Groups/{{id}}` (add <= {PATCH_BATCH} members)",
            f"{r.memberships:,} memberships",
            r.memberships,
        ),
    )
    for key, label, items, count in rows:
        o = r.phases[key]
        lines.append(
            f"| {label} | {o.requests:,} | {items} | {o.elapsed:.1f} | "
            f"{count / o.elapsed if o.elapsed else 0:,.0f} | {o.rate:,.0f} | "
            f"{o.rate / baseline_b:.2f} | {o.percentile(50):.1f} | {o.percentile(99):.1f} | "
            f"{o.errors} |"
        )
    requests = sum(o.requests for o in r.phases.values())
    lines.append(
        f"| **whole sync** | {requests:,} | {r.users:,} users | {r.seconds:.1f} | "
        f"**{r.users / r.seconds if r.seconds else 0:,.0f} users/s** | "
        f"{requests / r.seconds if r.seconds else 0:,.0f} | "
        f"{requests / r.seconds / baseline_b if r.seconds else 0:.2f} | | | {r.errors} |"
    )
    return lines


def summary(r: SyncResult) -> str:
    parts = []
    for key, count in (("users", r.users), ("groups", r.groups), ("members", r.memberships)):
        o = r.phases[key]
        parts.append(f"{key} {count / o.elapsed if o.elapsed else 0:,.0f}/s ({o.errors} errors)")
    return ", ".join(parts) + f"; {r.users / r.seconds:,.0f} users/s end to end"
