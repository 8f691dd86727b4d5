"""The gateway's one connection to the identity core, opened per event loop.

A grpc.aio channel belongs to the event loop that made it, so the gateway never
opens one at import or when the app is built: `Core.open()` runs in the ASGI
lifespan startup of each worker (its loop), `Core.close()` at its shutdown.
Resources hold the `Core` and read `core.client` when they call.
"""

from __future__ import annotations

from collections.abc import Callable

from scim_identity_client import AsyncIdentityClient

from .errors import ScimError

#: Makes the worker's client; called once per lifespan startup. It takes
#: AsyncIdentityClient's keywords (`interceptors=`: app.create_app adds tracing's).
ClientFactory = Callable[..., AsyncIdentityClient]


class Core:
    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._client: AsyncIdentityClient | None = None

    @property
    def client(self) -> AsyncIdentityClient:
        if self._client is None:
            # Only a server that skipped the ASGI lifespan gets here.
            raise ScimError(
                503,
                "The gateway is not connected to the identity service (it has not "
                "started, or is stopping); retry shortly.",
                headers={"Retry-After": "5"},
            )
        return self._client

    @property
    def is_open(self) -> bool:
        return self._client is not None

    async def open(self) -> AsyncIdentityClient:
        if self._client is None:
            self._client = self._factory()
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
