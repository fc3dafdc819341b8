# syntax=docker/dockerfile:1
# The canaryd controller image: docker build -t canaryd:0.1.0 .
#
# Stage 1 builds the canaryd wheel and a wheel for every dependency, so the
# final stage installs from local files only. Stage 2 is a slim Python with
# those wheels installed and nothing else: no compiler, no pip cache, no
# sources. It runs as uid/gid 65532 (numeric, so Kubernetes' runAsNonRoot can
# verify it) and works with a read-only root filesystem.

FROM python:3.11-slim AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY canaryd ./canaryd
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# canaryd's version (pyproject.toml); the image is tagged canaryd:<version>, as the
# manifests and the Helm chart name it. packaging/render_release.py checks they agree.
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="canaryd" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="Progressive delivery on Gateway API routes, judged by Prometheus" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/canaryd-*.whl
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["canaryd", "run"]
