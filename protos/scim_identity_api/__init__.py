"""The identity.v1 gRPC contract (generated code lives in identity.v1)."""
