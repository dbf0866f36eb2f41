"""Workarounds for Keras 3 `fit` under tf.distribute;
each patches one model instance, nothing global.

- `symbolic_build_from_spec`: Keras' symbolic build pulls a batch from a new iterator of the
  training data (reshuffling it, and failing across workers, keras-team/keras#20585).
  `build_from_spec` is that build, run early (a resumed run restores its metrics' totals).
- `fix_multi_worker`: scalar step logs fail `strategy.reduce` under MultiWorkerMirroredStrategy
  (tensorflow/tensorflow#72388).
"""

import types

import tensorflow as tf

from lambda_keras.training.strategy import is_multi_worker


def symbolic_build_from_spec(model, strategy, element_spec):
    """NOTE: under any tf.distribute strategy, Keras' `_maybe_symbolic_build` learns the data's
    shapes by pulling a batch from a new iterator of the training data. That decodes a batch,
    advances the shuffle (every new iterator of a dataset reshuffles it, so the data order would
    depend on the strategy and on whether the run is resumed), and fails across workers
    (`strategy.reduce` of a distributed batch, keras-team/keras#20585). Specs of the
    per-replica batch give `_symbolic_build` the same shapes without touching the data."""
    if getattr(model, "_distribute_strategy", None) is None:
        return  # default strategy: Keras builds while tracing, no extra iterator

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        build_from_spec(self, strategy, element_spec)

    model._maybe_symbolic_build = types.MethodType(maybe_symbolic_build, model)


def build_from_spec(model, strategy, element_spec):
    """Builds a compiled model's loss and metrics now (Keras' symbolic build, from the specs of
    the per-replica batch), which Keras otherwise does when the first step is traced: a resumed
    run restores the metrics' running totals before that (training/backup.py)."""
    replicas = strategy.num_replicas_in_sync

    def per_replica(spec):
        batch = spec.shape[0]
        return tf.TensorSpec([max(batch // replicas, 1) if batch else 1] + spec.shape[1:],
                             spec.dtype)

    with strategy.scope():
        model._symbolic_build(data_batch=tf.nest.map_structure(per_replica, element_spec))


def fix_multi_worker(model, strategy):
    """NOTE: Keras 3 step logs under MultiWorkerMirroredStrategy are reduced with
    `strategy.reduce("MEAN", value, axis=0)`, which fails for scalars ("Invalid reduction
    dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388, keras-team/keras
    #20585); the steps return shape-[1] logs instead, whose axis-0 mean over all replicas is the
    scalar Keras expects. (The other multi-worker failure is `symbolic_build_from_spec`'s.)"""
    if not is_multi_worker(strategy):
        return

    def vector_logs(step):
        def wrapped(batch):
            return {k: tf.reshape(v, [1]) for k, v in step(batch).items()}
        return wrapped

    model.train_step = vector_logs(type(model).train_step.__get__(model))
    model.test_step = vector_logs(type(model).test_step.__get__(model))

