"""The RPC edge: the gRPC server, its interceptors, authentication and the servicers that
translate protobuf requests into domain calls. Imports changes, domain, storage and the root."""
