"""Large groups' members are encoded one at a time (no dict per member); the JSON
must be exactly what the dict-per-member encoding gives."""

from __future__ import annotations

import orjson

from scim_gateway.scim.mapping import group_to_scim
from scim_identity_api.v1 import groups_pb2

BASE = "https://scim.example.com/scim/v2/acme"


def test_encoded_members_are_the_same_json() -> None:
    g = groups_pb2.Group(display_name='Team "A"', external_id="x")
    g.meta.id = "7a0f5e3c-0000-4000-8000-000000000001"
    g.meta.version = 3
    g.members.add(value="u1", type=groups_pb2.MEMBER_TYPE_USER, display="Zoë \u2603")
    g.members.add(value="g1", type=groups_pb2.MEMBER_TYPE_GROUP)
    g.members.add(value="u2")
    plain = orjson.loads(orjson.dumps(group_to_scim(g, BASE)))
    encoded = orjson.loads(orjson.dumps(group_to_scim(g, BASE, encoded_members=True)))
    assert encoded == plain
    assert [m["value"] for m in encoded["members"]] == ["u1", "g1", "u2"]
    empty = groups_pb2.Group(display_name="none")
    assert (
        orjson.loads(orjson.dumps(group_to_scim(empty, BASE, encoded_members=True)))["members"]
        == []
    )
