"""Classify image files with a lambda_keras model served by TF Serving's REST API; prints the top-5.

    python export/client_rest.py cat.jpg dog.png --model lambda_resnet --url http://localhost:8501

Standard library only. The files are sent as they are (JPEG or PNG) to the `serving_bytes`
signature, base64-encoded in TF Serving's `{"b64": ...}` form; decoding, resizing, cropping and
normalisation happen inside the served model.
"""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request

SIGNATURE = "serving_bytes"
START_SERVER = "start one with export/serve.sh [MODEL_BASE_PATH] (see export/README.md)"


def build_body(images, signature=SIGNATURE):
    """The JSON body of a predict request (row format) for encoded images (a list of bytes)."""
    instances = [{"b64": base64.b64encode(image).decode("ascii")} for image in images]
    return {"signature_name": signature, "instances": instances}


def predict(url, model, body, version=None, timeout=30.0):
    """POSTs `body` to /v1/models/<model>[/versions/<version>]:predict; returns the predictions."""
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    request = urllib.request.Request(
        url.rstrip("/") + path, data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["predictions"]
    except urllib.error.HTTPError as error:  # TF Serving explains bad requests in the body
        raise SystemExit(f"HTTP {error.code}: {error.read().decode('utf-8', 'replace')}") from None
    except (urllib.error.URLError, OSError) as error:  # no server there (refused, timed out)
        reason = getattr(error, "reason", error)
        raise SystemExit(f"no TF Serving REST API answered at {url} ({reason}); "
                         f"{START_SERVER}, or pass its address with --url") from None


def format_predictions(paths, predictions):
    lines = []
    for path, prediction in zip(paths, predictions):
        lines.append(path)
        for label, score in zip(prediction["top_k_labels"], prediction["top_k_scores"]):
            lines.append(f"  {score:7.4f}  {label}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="JPEG or PNG files")
    parser.add_argument("--model", default="lambda_resnet", help="model name in models.config")
    parser.add_argument("--url", default="http://localhost:8501", help="TF Serving REST address")
    parser.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    args = parser.parse_args(argv)
    images = []
    for path in args.images:
        with open(path, "rb") as f:
            images.append(f.read())
    predictions = predict(args.url, args.model, build_body(images), version=args.version)
    print(format_predictions(args.images, predictions))


if __name__ == "__main__":
    sys.exit(main())
