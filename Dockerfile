# One image for every component: identity-service, scim-gateway, identityctl and the
# example subscribers. Build tools stay in the first stage; the final stage runs as a
# non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos protos
COPY identity_service identity_service
COPY scim_gateway scim_gateway
COPY identity_log identity_log
COPY clients clients
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY --chown=app clients/examples /app/examples
# Mount points of the generated secrets (docker-compose.yml): a new named volume takes
# its owner from the image's directory, so the non-root init service can write them.
RUN mkdir -p /run/scim-identity/database /run/scim-identity/core /run/scim-identity/admin \
        /run/scim-identity/gateway /run/scim-identity/subscriber \
    && chown -R app /run/scim-identity
USER app
WORKDIR /app
ENV PYTHONUNBUFFERED=1
# The core's gRPC port, the gateway's SCIM port, the core's and the gateway's metrics
# ports (IDENTITY_METRICS_LISTEN, SCIM_METRICS_LISTEN).
EXPOSE 50051 8080 9464 9465
CMD ["identity-service"]
