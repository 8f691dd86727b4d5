"""The core's built-in attribute catalogue as the gateway sees it, without processes:
identity_service.schema's definitions, as PolicyService.GetSchemas serves them."""

from __future__ import annotations

from identity_service.schema import BUILTIN_SCHEMAS, definitions
from scim_gateway.scim.schemas import schema_set_of

BUILTIN = schema_set_of(definitions(BUILTIN_SCHEMAS))
USER_TYPE = BUILTIN.user
GROUP_TYPE = BUILTIN.group
