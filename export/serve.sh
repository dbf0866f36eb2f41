#!/usr/bin/env bash
# Serves a lambda_keras SavedModel base path with TF Serving in Docker: REST on 8501, gRPC on 8500
# (the image's defaults), server-side batching; the model's warmup requests run at load.
# Usage, from the repository root after `make demo`:
#
#   export/serve.sh [MODEL_BASE_PATH]     # default: runs/demo/export/saved_model
#
# MODEL_BASE_PATH holds integer version directories (1/, 2/, ...); the newest is served.
# TF_SERVING_IMAGE picks the image; use a TF Serving release at least as new as the TensorFlow
# that exported the model (older servers may not know newer ops).
set -euo pipefail
MODEL_BASE_PATH="$(cd "${1:-runs/demo/export/saved_model}" && pwd)"
KIT="$(cd "$(dirname "$0")" && pwd)"
exec docker run --rm -p 8500:8500 -p 8501:8501 \
  -v "${MODEL_BASE_PATH}:/models/lambda_resnet:ro" \
  -v "${KIT}:/config:ro" \
  "${TF_SERVING_IMAGE:-tensorflow/serving}" \
  --model_config_file=/config/models.config \
  --enable_batching --batching_parameters_file=/config/batching_parameters.txt
