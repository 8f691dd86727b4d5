"""identity-admin: the admin console (issue #17). A stateless Falcon ASGI app under
gunicorn with uvicorn workers that talks to the core only through the contract
(`scim_identity_client.AsyncIdentityClient`), as the SCIM gateway does."""
