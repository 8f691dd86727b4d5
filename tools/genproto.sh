#!/usr/bin/env bash
# Regenerates the Python code of the identity.v1 contract from protos/.
# Usage: tools/genproto.sh [OUTDIR]   (default: protos, i.e. in place)
# Pinned by pyproject.toml: grpcio-tools (protoc + grpc plugin) and mypy-protobuf (.pyi stubs).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-protos}"
py="${PYTHON:-.venv/bin/python}"
export PATH="$(dirname "$py"):$PATH"  # protoc-gen-mypy lives beside the interpreter
mkdir -p "$out/scim_identity_api/v1"
rm -f "$out"/scim_identity_api/v1/*_pb2*.py "$out"/scim_identity_api/v1/*_pb2*.pyi
"$py" -m grpc_tools.protoc -Iprotos \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  protos/scim_identity_api/v1/*.proto
