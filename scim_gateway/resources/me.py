"""`/Me` (RFC 7644 §3.11): not implemented, and said so with a SCIM error."""

from __future__ import annotations

from falcon.asgi import Request, Response

from ..errors import ScimError

_DETAIL = (
    "/Me is not implemented: this service provider is called by provisioning "
    "clients with tenant tokens, which do not stand for a user (RFC 7644 §3.11)."
)


class MeResource:
    async def _refuse(self, req: Request, resp: Response) -> None:
        raise ScimError(501, _DETAIL)

    on_get = on_post = on_put = on_patch = on_delete = _refuse
