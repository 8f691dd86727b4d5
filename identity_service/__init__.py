"""The identity core: owns tenants, users, groups, roles, tokens, history and the event log."""
