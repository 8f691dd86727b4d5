"""The tenant's own schemas, read from its policy when a request needs them.

The policy is never cached across requests (a policy change takes effect on the
next request) and is fetched at most once per request (a /Bulk request shares it
between its operations); requests that only use the built-in schemas never
fetch it.
"""

from __future__ import annotations

from .core import Core
from .errors import core_errors
from .http import Call
from .scim.schemas import SchemaSet, schema_set

_MEMO_KEY = "schema_set"


async def tenant_schemas(core: Core, call: Call) -> SchemaSet:
    """The built-in schemas plus the calling tenant's extension schemas."""
    cached = call.memo.get(_MEMO_KEY)
    if isinstance(cached, SchemaSet):
        return cached
    with core_errors():
        policy = await core.client.get_policy(call.tenant_id, ctx=call.ctx)
    found = schema_set(policy.extension_schemas)
    call.memo[_MEMO_KEY] = found
    return found
