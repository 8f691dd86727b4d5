"""Generated Python of protos/scim_identity_api/v1/*.proto (wire package identity.v1):
regenerate with `make proto`, never edit."""
