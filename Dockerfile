# stilts gRPC server image.
#   CPU (default):  docker build -t stilts .
#   GPU:            docker build --build-arg GPU=1 -t stilts:gpu .   (onnxruntime-gpu + faiss-gpu-cu12)
#   run:            docker run -p 50051:50051 -p 127.0.0.1:9464:9464 -v stilts-indexes:/var/lib/stilts/indexes \
#                     -e STILTS_AUTH_TOKEN=... --stop-timeout 35 stilts
# Every `stilts serve` flag also reads a STILTS_* variable (see `stilts serve --help`).
ARG GPU=0
ARG PYTHON_IMAGE=python:3.11-slim

# --- model: build the embedded default model once (needs torch; the runtime does not) --------
FROM ${PYTHON_IMAGE} AS model
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 STILTS_HOME=/opt/stilts-home
WORKDIR /src
COPY . .
# CPU torch from the PyTorch index (the PyPI Linux wheel would pull the CUDA stack)
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && pip install ".[train]" \
 && stilts models install default

# --- runtime bases -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-0
RUN python -m venv /opt/venv

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS runtime-1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

# --- runtime -----------------------------------------------------------------------------------
FROM runtime-${GPU}
ARG GPU
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    STILTS_HOME=/var/lib/stilts \
    STILTS_HOST=0.0.0.0 \
    STILTS_PORT=50051 \
    STILTS_METRICS_PORT=9464 \
    STILTS_METRICS_HOST=0.0.0.0 \
    STILTS_DATA_DIR=/var/lib/stilts/indexes \
    STILTS_GRACE_SECONDS=30
WORKDIR /opt/stilts
COPY pyproject.toml README.md ./
COPY stilts ./stilts
COPY index ./index
COPY server ./server
COPY training ./training
COPY benchmarks ./benchmarks
COPY proto ./proto
COPY examples ./examples
RUN pip install . \
 && if [ "$GPU" = "1" ]; then \
      pip uninstall -y onnxruntime faiss-cpu \
      && pip install "onnxruntime-gpu>=1.20,<1.32" "faiss-gpu-cu12>=1.9,<1.15"; \
    fi
RUN groupadd --system stilts \
 && useradd --system --gid stilts --home-dir /var/lib/stilts --no-create-home stilts \
 && mkdir -p /var/lib/stilts/indexes \
 && chown -R stilts:stilts /var/lib/stilts
COPY --from=model --chown=stilts:stilts /opt/stilts-home/models /var/lib/stilts/models
USER stilts
VOLUME ["/var/lib/stilts/indexes"]
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD stilts health --server "127.0.0.1:${STILTS_PORT}" --timeout 3 || exit 1
ENTRYPOINT ["stilts"]
CMD ["serve"]
