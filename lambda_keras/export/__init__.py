"""Export: TF Serving SavedModels and LiteRT (TFLite) flatbuffers, the serving contract built in.

- `serving.py`: `saved_model(model, export_dir)`, a TF Serving model base path with two
  signatures (`serving_default` raw pixels, `serving_bytes` JPEG/PNG bytes), labels, top-k,
  warmup records, atomic versions; variables stored once.
- `images.py`: the in-graph guards and decoding of the served signatures (non-finite pixels,
  decompression bombs, resize budget), each failing the request with INVALID_ARGUMENT.
- `litert.py`: `tflite(model, path, quantization=...)` with built-in ops only, checked
  calibration data and full-integer int8 results; `LiteRTRunner`, the one LiteRT interpreter
  loop of the package.
- `flatbuffers.py`: what a written .tflite holds (custom and float operators, quantization
  scales) and the int8 checks `tflite` runs on it.

Everything documented here is importable from `lambda_keras.export` as before the split.
"""

from lambda_keras.export.flatbuffers import (
    MAX_QUANTIZATION_SCALE,
    float_operators,
    tflite_custom_ops,
)
from lambda_keras.export.images import MAX_IMAGE_PIXELS, MAX_RESIZED_BYTES
from lambda_keras.export.litert import (
    QUANTIZATIONS,
    LiteRTRunner,
    calibration_samples,
    tflite,
)
from lambda_keras.export.serving import (
    LABELS_FILE,
    SIGNATURE_BYTES,
    SIGNATURE_IMAGES,
    WARMUP_FILE,
    remove_stale_staging,
    saved_model,
    warmup_requests,
)

__all__ = [
    "LABELS_FILE", "MAX_IMAGE_PIXELS", "MAX_QUANTIZATION_SCALE", "MAX_RESIZED_BYTES",
    "QUANTIZATIONS", "SIGNATURE_BYTES", "SIGNATURE_IMAGES", "WARMUP_FILE", "LiteRTRunner",
    "calibration_samples", "float_operators", "remove_stale_staging", "saved_model", "tflite",
    "tflite_custom_ops", "warmup_requests",
]
