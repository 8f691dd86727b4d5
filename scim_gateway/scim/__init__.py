"""SCIM syntax (RFC 7643 / RFC 7644): filters, PATCH operations, resource mapping, schemas
and attribute projection. Knows nothing of HTTP; the resources above use it."""
