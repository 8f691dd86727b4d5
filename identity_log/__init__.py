"""JSON log lines for the identity service and the SCIM gateway: a package below both, so
neither imports the other nor the client library (which logs nothing of its own)."""
