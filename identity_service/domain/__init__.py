"""The domain: tenants and tokens, users, groups, roles, policies, connector provisioning
and the history of operations; each write is one transaction over storage."""
