"""Multi-device training on JAX through `keras.distribution` (README "Backends"), on host
devices that XLA makes of this CPU (`XLA_FLAGS=--xla_force_host_platform_device_count=N`).

A device count is fixed when JAX starts, so the runs happen in a JAX process of their own
(`python tests/test_backends_distribution.py DIR`, which writes DIR/data_parallel.json); the tests
read its record. Independent expectation: the same training on one device. Models:
tests/test_backends.py's `small_lambda_model`, the small one with "local" and "relative" lambda
layers and the one whose query windows training recomputes in a loop over the batch's images.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_backends import relative_error, small_lambda_model, subprocess_env, to_numpy

DATA_PARALLEL_DEVICES = 2  # host devices of the JAX process (XLA_FLAGS)


# ---------------------------------------------------------------- subprocess (JAX, N devices)
def sharding_probe():
    """A layer that passes its input on; on JAX it records, per traced call, how that input is
    split over the devices, (one device's shard shape, number of devices), in `.shards`."""
    import keras

    class ShardingProbe(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.shards = []

        def call(self, x):
            if keras.backend.backend() == "jax":
                import jax

                jax.debug.inspect_array_sharding(x, callback=lambda sharding: self.shards.append(
                    (list(sharding.shard_shape(x.shape)), len(sharding.device_set))))
            return x

    return ShardingProbe()


def run_data_parallel(workdir):
    """On JAX with DATA_PARALLEL_DEVICES host devices (the parent's XLA_FLAGS), for each
    `small_lambda_model` (the windows one with every query-window map recomputed in the image loop):
    two epochs of batches of 8 (SGD) on one device, then the same from the same weights under
    `keras.distribution.DataParallel` over every device; writes what the parent compares to
    data_parallel.json, {model: record}."""
    import jax
    import keras
    from lambda_keras.layers.formulations import current_runtime, execution

    def train(windows):
        model, x, y = small_lambda_model(windows, [sharding_probe()])
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        initial = [to_numpy(w).copy() for w in model.weights]
        losses = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        lambda_layer, runtime, size = model.layers[1], current_runtime(), x.shape[1]
        plan = lambda_layer._plan(lambda_layer._formulation(size, size, True, runtime), size,
                                  size, True, runtime, batch=8)  # what its training calls ran
        replicas = [len(w.value.sharding.device_set) for w in model.weights]
        return dict(losses=losses.history["loss"], shards=model.layers[0].shards,
                    replicas=replicas, image_loop=plan.image_loop, input_shape=x.shape[1:]), \
            initial, [to_numpy(w) for w in model.weights]

    runs = {}
    remat_min_bytes = execution.REMAT_MIN_BYTES
    for distribution in (None, keras.distribution.DataParallel(devices=jax.devices())):
        keras.distribution.set_distribution(distribution)
        for windows in (False, True):
            execution.REMAT_MIN_BYTES = 0 if windows else remat_min_bytes
            runs[windows, distribution is not None] = train(windows)
    records = {}
    for windows, name in ((False, "lambda_layers"), (True, "recomputed_windows")):
        (one_device, initial, expected), (parallel, _, actual) = (
            runs[windows, False], runs[windows, True])
        records[name] = dict(
            devices=len(jax.devices()), one_device=one_device, data_parallel=parallel,
            # Per weight, relative to its trained scale: how far the two runs' weights differ,
            # and how far one-device training moved it.
            errors=[relative_error(a, e) for a, e in zip(actual, expected)],
            moved=[relative_error(i, e) for i, e in zip(initial, expected)])
    with open(os.path.join(workdir, "data_parallel.json"), "w", encoding="utf-8") as f:
        json.dump(records, f)


# -------------------------------------------------------------------- the tests (parent)
@pytest.fixture(scope="module")
def data_parallel_records(tmp_path_factory):
    """The records of `run_data_parallel`, run in a JAX process with DATA_PARALLEL_DEVICES host
    devices."""
    workdir = tmp_path_factory.mktemp("data_parallel")
    env = subprocess_env("jax", XLA_FLAGS=" ".join(filter(None, [
        os.environ.get("XLA_FLAGS"),
        f"--xla_force_host_platform_device_count={DATA_PARALLEL_DEVICES}"])))
    process = subprocess.run([sys.executable, __file__, str(workdir)],
                             env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-4000:]
    with open(workdir / "data_parallel.json", encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize("model, image_loop", [("lambda_layers", None),
                                               ("recomputed_windows", "recomputed")])
def test_jax_data_parallel_training_matches_one_device(data_parallel_records, model, image_loop):
    """keras.distribution on JAX (README "Backends": the route to multi-device training there),
    on DATA_PARALLEL_DEVICES host devices that XLA makes of this CPU: under DataParallel each
    device gets its share of every batch (the model's first layer sees batch shards) and a copy of
    every weight, and two epochs give the one-device losses and weights (global-batch gradients
    and batch-norm statistics), while every weight moves far more than the two runs differ. Also
    where the layer's training maps are recomputed in a loop over the (sharded) batch's images."""
    record = data_parallel_records[model]
    devices = record["devices"]
    one, parallel = record["one_device"], record["data_parallel"]
    shape = one["input_shape"]
    assert devices == DATA_PARALLEL_DEVICES
    assert one["image_loop"] == parallel["image_loop"] == image_loop
    assert one["shards"] and all(s == [[8, *shape], 1] for s in one["shards"]), one["shards"]
    assert parallel["shards"] and all(s == [[8 // devices, *shape], devices]
                                      for s in parallel["shards"]), parallel["shards"]
    assert set(parallel["replicas"]) == {devices} and set(one["replicas"]) == {1}
    np.testing.assert_allclose(parallel["losses"], one["losses"], rtol=1e-5)
    # Each weight: the runs agree to float32 round-off, and far closer than training moved it.
    for error, moved in zip(record["errors"], record["moved"]):
        assert error <= min(1e-5, moved / 100), (error, moved)


if __name__ == "__main__":
    run_data_parallel(sys.argv[1])
