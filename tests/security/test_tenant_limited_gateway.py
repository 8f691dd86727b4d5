"""A gateway whose service credential is limited to named tenants serves those
tenants (its calls name the tenant in `identity-tenant` when only the bearer says
which, and every record of a history batch is checked), and nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from identity_service.edge.auth import hash_secret
from identity_service.settings import Settings
from scim_gateway.app import create_app
from scim_gateway.settings import Settings as GatewaySettings
from scim_identity_client import IdentityClient

from ..gateway.conftest import USER_SCHEMA, ScimClient, core_client
from ..support import ServiceThread
from .helpers import ADMIN_SECRET, GATEWAY_SECRET

pytestmark = pytest.mark.xdist_group("security-core")


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory, module_database_url: str) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("limited")
    creds = tmp / "credentials.json"
    creds.write_text(
        json.dumps(
            [
                {"name": "ops", "secret_sha256": hash_secret(ADMIN_SECRET), "role": "admin"},
                {
                    "name": "gw-a",
                    "secret_sha256": hash_secret(GATEWAY_SECRET),
                    "role": "gateway",
                    "tenants": ["lim-a"],
                },
            ]
        )
    )
    service = ServiceThread(
        Settings(
            database_url=module_database_url,  # SQLite and PostgreSQL
            listen="127.0.0.1:0",
            db_pool_size=2,  # PostgreSQL connections are shared by every suite here
            credentials_file=str(creds),
        )
    )
    target = service.start()
    yield target
    service.stop()


def test_a_tenant_limited_gateway_serves_its_tenants_only(core: str) -> None:
    with IdentityClient(core, token=ADMIN_SECRET) as admin:
        a = admin.create_tenant("lim-a")
        b = admin.create_tenant("lim-b")
        token_a = admin.issue_token(a.id).secret
        token_b = admin.issue_token(b.id).secret
        app = create_app(GatewaySettings(), core_client(core, token=GATEWAY_SECRET))

        scim_a = ScimClient(app, "/scim/v2/lim-a", token_a)
        assert scim_a.get("/Users").status_code == 200
        created = scim_a.post("/Users", {"schemas": [USER_SCHEMA], "userName": "x@example.com"})
        assert created.status_code == 201
        ops = admin.list_operations(a.id).operations
        assert sorted(o.method for o in ops) == ["GET", "POST"]  # the batches got through

        # Another tenant, by its URL or by a URL naming none: refused, nothing written.
        assert ScimClient(app, "/scim/v2/lim-b", token_b).get("/Users").status_code == 403
        assert ScimClient(app, "/scim/v2", token_b).get("/Users").status_code == 403
        assert ScimClient(app, "/scim/v2", token_a).get("/Users").status_code == 403
        assert admin.list_operations(b.id).operations == []
        assert admin.list_users(b.id).total_results == 0
