"""The bearer protocol's metadata keys (v1/bearer.proto), read from the contract: each
MetadataKey value's `key` option. Hand-written beside the generated code (as env.py),
and only this: no key string is spelled anywhere else."""

from __future__ import annotations

from .v1 import bearer_pb2


def _key(value: int) -> str:
    options = bearer_pb2.MetadataKey.DESCRIPTOR.values_by_number[value].GetOptions()
    return str(options.Extensions[bearer_pb2.key])


REQUEST_ID_KEY = _key(bearer_pb2.METADATA_KEY_REQUEST_ID)
ACTOR_KEY = _key(bearer_pb2.METADATA_KEY_ACTOR)
AUTHORIZATION_KEY = _key(bearer_pb2.METADATA_KEY_AUTHORIZATION)
BEARER_KEY = _key(bearer_pb2.METADATA_KEY_BEARER)
TENANT_KEY = _key(bearer_pb2.METADATA_KEY_TENANT)
INTENT_KEY = _key(bearer_pb2.METADATA_KEY_INTENT)
CALLER_KEY = _key(bearer_pb2.METADATA_KEY_CALLER)
COMMIT_DEADLINE_KEY = _key(bearer_pb2.METADATA_KEY_COMMIT_DEADLINE)
#: The one value of INTENT_KEY.
WRITE_INTENT = "write"
