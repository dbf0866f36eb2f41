"""Classify image files with a lambda_keras model served by TF Serving's gRPC API; prints the top-5.

    python export/client_grpc.py cat.jpg dog.png --model lambda_resnet --address localhost:8500

Needs `pip install 'lambda-keras[serving]'` (tensorflow-serving-api, which brings grpcio and
tensorflow). The files are sent as they are (JPEG or PNG) to the `serving_bytes` signature as one
string tensor; decoding, resizing, cropping and normalisation happen inside the served model.
"""

import argparse
import sys

SIGNATURE = "serving_bytes"
START_SERVER = "start one with export/serve.sh [MODEL_BASE_PATH] (see export/README.md)"


def build_request(images, model, signature=SIGNATURE, version=None):
    """A PredictRequest for encoded images (a list of bytes)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    return request


def predict(address, request, timeout=30.0):
    """Sends `request` to PredictionService/Predict; returns {output name: numpy array}."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED):
                raise SystemExit(f"{error.code().name}: {error.details()}") from None
            raise SystemExit(f"no TF Serving gRPC API answered at {address} "
                             f"({error.code().name}: {error.details()}); {START_SERVER}, or "
                             "pass its host:port with --address") from None
    return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


def format_predictions(paths, outputs):
    lines = []
    for i, path in enumerate(paths):
        lines.append(path)
        for label, score in zip(outputs["top_k_labels"][i], outputs["top_k_scores"][i]):
            lines.append(f"  {score:7.4f}  {label.decode('utf-8')}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="JPEG or PNG files")
    parser.add_argument("--model", default="lambda_resnet", help="model name in models.config")
    parser.add_argument("--address", default="localhost:8500", help="TF Serving gRPC host:port")
    parser.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    args = parser.parse_args(argv)
    images = []
    for path in args.images:
        with open(path, "rb") as f:
            images.append(f.read())
    outputs = predict(args.address, build_request(images, args.model, version=args.version))
    print(format_predictions(args.images, outputs))


if __name__ == "__main__":
    sys.exit(main())
