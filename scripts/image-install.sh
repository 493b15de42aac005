#!/bin/sh
# Installs stilts into /opt/venv and creates the unprivileged user `stilts` (run by the Dockerfile's
# cpu and gpu targets, from /opt/stilts; PIP_OPTIONS: extra pip options, e.g. --find-links).
set -eu
runtime="${1:?usage: image-install.sh cpu|gpu}"
python3 -m venv /opt/venv
# shellcheck disable=SC2086  # PIP_OPTIONS is a list of options
/opt/venv/bin/pip install ${PIP_OPTIONS:-} .
if [ "$runtime" = gpu ]; then
    /opt/venv/bin/pip uninstall -y onnxruntime faiss-cpu
    # shellcheck disable=SC2086
    /opt/venv/bin/pip install ${PIP_OPTIONS:-} "onnxruntime-gpu>=1.20,<1.32" "faiss-gpu-cu12>=1.9,<1.15"
fi
groupadd --system stilts
useradd --system --gid stilts --home-dir /var/lib/stilts --no-create-home stilts
mkdir -p /var/lib/stilts/indexes
chown -R stilts:stilts /var/lib/stilts
