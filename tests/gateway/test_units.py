"""Mapping, projection, the error table and settings, without HTTP."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from scim_gateway.errors import ScimError, classify, from_identity_error
from scim_gateway.scim.mapping import (
    group_to_proto,
    group_to_scim,
    normalize,
    timestamp_json,
    user_to_proto,
    user_to_scim,
)
from scim_gateway.scim.projection import Projection
from scim_gateway.settings import Settings, SettingsError
from scim_identity_api.v1 import common_pb2, groups_pb2, users_pb2
from scim_identity_client.errors import IdentityError

from .catalogue import GROUP_TYPE, USER_TYPE

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
R = common_pb2.ErrorReason

# RFC 7643 §8.2, "Full User Representation" (abridged to implemented attributes).
RFC7643_8_2_FULL_USER: dict[str, Any] = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
    "id": "2819c223-7f76-453a-919d-413861904646",
    "externalId": "701984",
    "userName": "bjensen@example.com",
    "name": {
        "formatted": "Ms. Barbara J Jensen, III",
        "familyName": "Jensen",
        "givenName": "Barbara",
        "middleName": "Jane",
        "honorificPrefix": "Ms.",
        "honorificSuffix": "III",
    },
    "displayName": "Babs Jensen",
    "nickName": "Babs",
    "profileUrl": "https://login.example.com/bjensen",
    "emails": [
        {"value": "bjensen@example.com", "type": "work", "primary": True},
        {"value": "babs@jensen.org", "type": "home"},
    ],
    "addresses": [
        {
            "type": "work",
            "streetAddress": "100 Universal City Plaza",
            "locality": "Hollywood",
            "region": "CA",
            "postalCode": "91608",
            "country": "USA",
            "formatted": "100 Universal City Plaza\nHollywood, CA 91608 USA",
            "primary": True,
        }
    ],
    "phoneNumbers": [{"value": "555-555-5555", "type": "work"}],
    "ims": [{"value": "someaimhandle", "type": "aim"}],
    "photos": [
        {"value": "https://photos.example.com/profilephoto/72930000000Ccne/F", "type": "photo"}
    ],
    "userType": "Employee",
    "title": "Tour Guide",
    "preferredLanguage": "en-US",
    "locale": "en-US",
    "timezone": "America/Los_Angeles",
    "active": True,
    "password": "t1meMa$heen",
    "groups": [
        {
            "value": "e9e30dba",
            "$ref": "https://example.com/v2/Groups/e9e30dba",
            "display": "Tour Guides",
        }
    ],
    "x509Certificates": [
        {"value": "MIIDQzCCAqygAwIBAgICEAAwDQYJKoZIhvcNAQEFBQAwTjELMAkGA1UEBhMCVVMx"}
    ],
    "meta": {"resourceType": "User", "version": 'W/"a330bc54f0671c9"'},
}

# RFC 7643 §4.3, enterprise extension example.
RFC7643_4_3_ENTERPRISE = {
    "employeeNumber": "701984",
    "costCenter": "4130",
    "organization": "Universal Studios",
    "division": "Theme Park",
    "department": "Tour Operations",
    "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"},
}


def test_rfc7643_8_2_full_user_round_trips() -> None:
    body = {**RFC7643_8_2_FULL_USER, ENT: RFC7643_4_3_ENTERPRISE}
    body["schemas"] = [*body["schemas"], ENT]
    user = user_to_proto(normalize(body, USER_TYPE), USER_TYPE)
    assert user.name.honorific_suffix == "III"
    assert user.enterprise.manager.value == "26118915-6090-4610-87e4-49d8ca9f808d"
    assert not user.groups  # read-only: ignored
    user.meta.id = body["id"]
    user.meta.version = 3
    out = user_to_scim(user, "https://x/scim/v2", USER_TYPE)
    for key in ("userName", "name", "emails", "addresses", "phoneNumbers", "x509Certificates"):
        assert out[key] == body[key], key
    assert "password" not in out
    assert out[ENT]["department"] == "Tour Operations"
    assert out[ENT]["manager"]["$ref"].endswith("/Users/26118915-6090-4610-87e4-49d8ca9f808d")
    assert out["meta"]["version"] == 'W/"3"'
    assert out["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User", ENT]


def test_attribute_names_are_case_insensitive() -> None:
    doc = normalize(
        {"USERNAME": "a", "Name": {"GIVENNAME": "A"}, ENT.upper(): {"Department": "d"}}, USER_TYPE
    )
    assert doc == {"userName": "a", "name": {"givenName": "A"}, ENT: {"department": "d"}}


def test_string_booleans_are_accepted() -> None:
    doc = normalize(
        {"userName": "a", "active": "False", "emails": [{"value": "x", "primary": "TRUE"}]},
        USER_TYPE,
    )
    assert doc["active"] is False and doc["emails"][0]["primary"] is True


def test_custom_extension_round_trips_through_struct() -> None:
    urn = "urn:ietf:params:scim:schemas:extension:acme:2.0:User"
    user = user_to_proto(
        normalize({"userName": "a", urn: {"badge": 42, "tags": ["x"]}}, USER_TYPE), USER_TYPE
    )
    out = user_to_scim(user, "", USER_TYPE)
    assert out[urn] == {"badge": 42, "tags": ["x"]}
    assert urn in out["schemas"]


def test_group_mapping() -> None:
    # RFC 7643 §8.4 group representation.
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
        "displayName": "Tour Guides",
        "members": [
            {
                "value": "2819c223-7f76-453a-919d-413861904646",
                "$ref": "https://example.com/v2/Users/2819c223-7f76-453a-919d-413861904646",
                "display": "Babs Jensen",
            },
            {"$ref": "https://example.com/v2/Users/902c246b", "type": "User"},
        ],
    }
    group = group_to_proto(normalize(body, GROUP_TYPE))
    assert [m.value for m in group.members] == ["2819c223-7f76-453a-919d-413861904646", "902c246b"]
    assert group.members[1].type == groups_pb2.MEMBER_TYPE_USER
    group.members[1].display = "Mandy"
    out = group_to_scim(group, "https://x")
    assert out["members"][1] == {
        "value": "902c246b",
        "$ref": "https://x/Users/902c246b",
        "type": "User",
        "display": "Mandy",
    }


def test_projection_include_exclude() -> None:
    doc = user_to_scim(
        user_to_proto(
            normalize({**RFC7643_8_2_FULL_USER, ENT: RFC7643_4_3_ENTERPRISE}, USER_TYPE),
            USER_TYPE,
        ),
        "",
        USER_TYPE,
    )
    p = Projection.parse("userName,emails.type," + ENT + ":department", None)
    out = p.apply(doc, USER_TYPE)
    assert out["userName"] == "bjensen@example.com"
    assert out["emails"] == [{"type": "work"}, {"type": "home"}]
    assert out[ENT] == {"department": "Tour Operations"}
    assert set(out) == {"schemas", "id", "userName", "emails", ENT}
    out = Projection.parse(None, f"emails,{ENT},id,schemas").apply(doc, USER_TYPE)
    assert "emails" not in out and ENT not in out and out["id"] == doc["id"] and "schemas" in out
    assert Projection.parse(None, "members").returns(GROUP_TYPE, "members") is False
    assert Projection.parse("displayName", None).returns(GROUP_TYPE, "members") is False
    assert Projection.parse(None, None).returns(GROUP_TYPE, "members") is True


@pytest.mark.parametrize(
    ("code", "reason", "status", "scim_type"),
    [
        (grpc.StatusCode.NOT_FOUND, R.ERROR_REASON_NOT_FOUND, 404, None),
        (grpc.StatusCode.ALREADY_EXISTS, R.ERROR_REASON_UNIQUENESS, 409, "uniqueness"),
        (grpc.StatusCode.ABORTED, R.ERROR_REASON_VERSION_MISMATCH, 412, None),
        (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_FILTER, 400, "invalidFilter"),
        (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_VALUE, 400, "invalidValue"),
        (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_MUTABILITY, 400, "mutability"),
        (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_TOO_MANY, 400, "tooMany"),
        (grpc.StatusCode.INVALID_ARGUMENT, R.ERROR_REASON_INVALID_CURSOR, 400, "invalidCursor"),
        (grpc.StatusCode.FAILED_PRECONDITION, R.ERROR_REASON_TENANT_INACTIVE, 403, None),
        (grpc.StatusCode.UNAUTHENTICATED, R.ERROR_REASON_UNAUTHENTICATED, 401, None),
        (grpc.StatusCode.PERMISSION_DENIED, R.ERROR_REASON_PERMISSION_DENIED, 403, None),
        (grpc.StatusCode.UNAVAILABLE, R.ERROR_REASON_UNAVAILABLE, 503, None),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 0, 504, None),
        (grpc.StatusCode.INTERNAL, 0, 500, None),
    ],
)
def test_error_table(
    code: grpc.StatusCode, reason: int, status: int, scim_type: str | None
) -> None:
    assert classify(code, reason) == (status, scim_type)
    err = from_identity_error(
        IdentityError("boom", code=code, detail=common_pb2.ErrorDetail(reason=reason))
    )
    assert (err.status, err.scim_type) == (status, scim_type)
    assert err.body()["status"] == str(status)
    if status == 503:
        assert err.headers["Retry-After"]
    if status == 401:
        assert err.headers["WWW-Authenticate"].startswith("Bearer")
    if status == 500:
        assert "boom" not in err.detail


def test_scim_error_body_shape() -> None:
    body = ScimError(400, "bad", "invalidValue").body()
    assert body == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "400",
        "scimType": "invalidValue",
        "detail": "bad",
    }


def test_settings_from_env() -> None:
    s = Settings.from_env({"SCIM_WORKERS": "4", "SCIM_PUBLIC_URL": "https://scim.example.com/"})
    assert (s.workers, s.public_url, s.max_payload_bytes) == (
        4,
        "https://scim.example.com",
        1 << 20,
    )
    # The environment's defaults are the code's, except that a deployed gateway
    # always checks the Host it is called by (its listen address by default).
    assert Settings.from_env({}) == Settings(allowed_hosts=frozenset({"127.0.0.1:8080"}))
    with pytest.raises(SettingsError):
        Settings.from_env({"SCIM_MAX_PAGE_SIZE": "lots"})
    with pytest.raises(SettingsError):
        Settings.from_env({"SCIM_DEFAULT_PAGE_SIZE": "500", "SCIM_MAX_PAGE_SIZE": "100"})
    # Metrics off unless SCIM_METRICS_LISTEN names host:port; tracing on an OTLP endpoint.
    assert Settings.from_env({}).metrics_listen == ""
    assert Settings.from_env({"SCIM_METRICS_LISTEN": ":9465"}).metrics_listen == ":9465"
    for bad in ("9465", "host:", "host:port", "host:70000"):
        with pytest.raises(SettingsError, match="SCIM_METRICS_LISTEN"):
            Settings.from_env({"SCIM_METRICS_LISTEN": bad})
    assert not Settings.from_env({}).tracing
    otlp = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}
    assert Settings.from_env(otlp).tracing
    assert not Settings.from_env({**otlp, "OTEL_SDK_DISABLED": "true"}).tracing


def test_user_proto_unchanged_by_normalize_round_trip() -> None:
    user = users_pb2.User(user_name="a", title="t")
    user.emails.add(value="a@x", primary=True)
    doc = normalize(user_to_scim(user, "", USER_TYPE), USER_TYPE)
    # Unchanged indeed: an unassigned `active` stays unassigned (a PATCH may remove it).
    assert user_to_proto(doc, USER_TYPE) == users_pb2.User(
        user_name="a", title="t", emails=user.emails
    )


@given(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.just(0)
    | st.integers(min_value=0, max_value=999).map(lambda n: n * 10**6)
    | st.integers(min_value=0, max_value=999_999).map(lambda n: n * 1000)
    | st.integers(min_value=-5, max_value=10**9 + 5)
    | st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
def test_timestamps_print_as_protobuf_prints_them(seconds: int, nanos: int) -> None:
    t = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    try:
        expected = t.ToJsonString()
    except ValueError:
        with pytest.raises(ValueError):
            timestamp_json(t)
        return
    assert timestamp_json(t) == expected
