"""The schema URNs of the resources this service holds (RFC 7643 §8.7.1), one definition
for the core's catalogue, the gateway's SCIM documents and the tools. Beside the contract
(like env.py): every component depends on it, and it imports nothing."""

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
