# stilts gRPC server image. Two final targets; pick one with --target (always pass it: without it
# a builder builds the last stage, gpu):
#   CPU:  docker build --target cpu -t stilts .          (or: make image)
#   GPU:  docker build --target gpu -t stilts:gpu .      (onnxruntime-gpu + faiss-gpu-cu12)
#   run:  docker run -p 50051:50051 -p 127.0.0.1:9464:9464 -v stilts-indexes:/var/lib/stilts/indexes \
#           -e STILTS_AUTH_TOKEN=... --stop-timeout 35 stilts
# No stage name is computed from a build argument, so Docker BuildKit, the classic builder and
# buildah/podman all build it (README "Operations" says how to build offline with buildah).
# Build arguments:
#   PYTHON_IMAGE     base of the model and cpu stages (needs python3 >= 3.11 with venv)
#   CUDA_IMAGE       base of the gpu stage
#   TORCH_INDEX_URL  where the model stage's CPU torch comes from ('' = pip's configured indexes,
#                    e.g. a local wheel folder through PIP_OPTIONS="--find-links /wheels")
#   PIP_OPTIONS      extra options of every pip install (mirrors, --find-links, --constraint)
# Every `stilts serve` flag also reads a STILTS_* variable (see `stilts serve --help`).
ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# --- model: build the embedded default model once (needs torch; the runtime does not) --------
FROM ${PYTHON_IMAGE} AS model
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_OPTIONS=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 STILTS_HOME=/opt/stilts-home \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
# CPU torch (the PyPI Linux wheel would pull the CUDA stack)
RUN python3 -m venv /opt/venv \
 && pip install $PIP_OPTIONS ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0" \
 && pip install $PIP_OPTIONS ".[train]" \
 && stilts models install default

# --- cpu: the default runtime ------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ARG PIP_OPTIONS=
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    STILTS_HOME=/var/lib/stilts STILTS_HOST=0.0.0.0 STILTS_PORT=50051 STILTS_HTTP_PORT=8080 \
    STILTS_METRICS_PORT=9464 STILTS_METRICS_HOST=0.0.0.0 \
    STILTS_DATA_DIR=/var/lib/stilts/indexes STILTS_GRACE_SECONDS=30
WORKDIR /opt/stilts
COPY pyproject.toml README.md ./
COPY scripts/image-install.sh ./scripts/
COPY stilts ./stilts
COPY index ./index
COPY server ./server
COPY training ./training
COPY benchmarks ./benchmarks
COPY proto ./proto
COPY examples ./examples
RUN sh scripts/image-install.sh cpu
COPY --from=model --chown=stilts:stilts /opt/stilts-home/models /var/lib/stilts/models
USER stilts
VOLUME ["/var/lib/stilts/indexes"]
EXPOSE 50051 8080 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD stilts health --server "127.0.0.1:${STILTS_PORT}" --timeout 3 || exit 1
ENTRYPOINT ["stilts"]
CMD ["serve"]

# --- gpu: CUDA runtime, onnxruntime-gpu and faiss-gpu ------------------------------------------
FROM ${CUDA_IMAGE} AS gpu
ARG PIP_OPTIONS=
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    STILTS_HOME=/var/lib/stilts STILTS_HOST=0.0.0.0 STILTS_PORT=50051 STILTS_HTTP_PORT=8080 \
    STILTS_METRICS_PORT=9464 STILTS_METRICS_HOST=0.0.0.0 \
    STILTS_DATA_DIR=/var/lib/stilts/indexes STILTS_GRACE_SECONDS=30
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/stilts
COPY pyproject.toml README.md ./
COPY scripts/image-install.sh ./scripts/
COPY stilts ./stilts
COPY index ./index
COPY server ./server
COPY training ./training
COPY benchmarks ./benchmarks
COPY proto ./proto
COPY examples ./examples
RUN sh scripts/image-install.sh gpu
COPY --from=model --chown=stilts:stilts /opt/stilts-home/models /var/lib/stilts/models
USER stilts
VOLUME ["/var/lib/stilts/indexes"]
EXPOSE 50051 8080 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD stilts health --server "127.0.0.1:${STILTS_PORT}" --timeout 3 || exit 1
ENTRYPOINT ["stilts"]
CMD ["serve"]
