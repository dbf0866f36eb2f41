"""Where training runs: the distribution strategy, the precision and XLA for it.

- `resolve_strategy(tpu=None, devices=None, cluster_resolver=None)`: `TPUStrategy` for `tpu=`
  (a TPU name or grpc:// address, "local" on a TPU VM, "auto" to probe `TPUClusterResolver`);
  `MultiWorkerMirroredStrategy` when `TF_CONFIG` names more than one worker; `MirroredStrategy`
  over several GPUs (or the given `devices`); else TF's default strategy.
- `resolve_precision`, `resolve_jit_compile`: "auto" settings for that strategy.
- `worker_index`, `strategy_name`, `is_tpu_strategy`: facts about it.
- `check_strategy`: a `strategy=` argument of train / evaluate is a `tf.distribute.Strategy`.
"""

import json
import os

import tensorflow as tf

from lambda_keras import utils
from lambda_keras.training.recipes import PRECISIONS


def _tf_config_cluster():
    """The TF_CONFIG dict when it describes more than one worker, else None."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}). "
                         f"Received: TF_CONFIG={raw!r}") from None
    cluster = config.get("cluster", {}) if isinstance(config, dict) else {}
    tasks = len(cluster.get("worker", ())) + len(cluster.get("chief", ()))
    return config if tasks > 1 else None


def _tpu_resolver(tpu):
    if tpu == "local":
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
    # "auto": TPU_NAME / the GCE metadata server; otherwise a TPU name or grpc:// address.
    return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=None if tpu == "auto" else tpu)


def _tpu_strategy(resolver, connect, what):
    """TPUStrategy over `resolver`'s TPUs; ValueError naming `what` when none can be used."""
    try:
        if connect:
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        # e.g. "local" without a TPU: NotFoundError "TPUs not found in the cluster. Failed in
        # initialization: No OpKernel was registered to support Op 'ConfigureDistributedTPU' ..."
        reason = (getattr(error, "message", None) or str(error)).split(". ")[0].strip()
        raise ValueError(
            f"No TPU found for {what}: TensorFlow could not initialise a TPU system there "
            f"({type(error).__name__}: {reason}). Run on a TPU VM or name a reachable TPU; "
            "without a TPU, leave it out to run on the CPU or GPUs.") from error
    return tf.distribute.TPUStrategy(resolver)


def resolve_strategy(tpu=None, *, devices=None, cluster_resolver=None, tpu_arg="tpu"):
    """The `tf.distribute.Strategy` for this machine or cluster.

    Order: TPU (`tpu` or `cluster_resolver`) -> `MultiWorkerMirroredStrategy` when TF_CONFIG has
    several workers -> `MirroredStrategy` over `devices` or over several GPUs -> the default
    strategy.

    Args:
        tpu: None (no TPU), "local" (the TPUs of a TPU VM), "auto" (use a TPU when
            `TPUClusterResolver` finds one, else go on) or a TPU name / "grpc://host:port".
        devices: explicit devices for a `MirroredStrategy` (e.g. ["/cpu:0", "/cpu:1"]).
        cluster_resolver: a ready TPU cluster resolver (used instead of building one).
        tpu_arg: how the messages name `tpu` (the command line passes "--tpu").

    Returns:
        A `tf.distribute.TPUStrategy`, `MultiWorkerMirroredStrategy` or `MirroredStrategy`, or
        `tf.distribute.get_strategy()` (the default strategy, one device).

    Raises:
        TypeError: `tpu` is neither None nor a string.
        ValueError: `tpu` is empty; the TPU of `tpu` (other than "auto") or `cluster_resolver`
            cannot be resolved (an unknown name: the Cloud TPU API or the metadata server did
            not answer) or initialised (no TPU there); TF_CONFIG is not valid JSON.

    Example:

    ```python
    strategy = training.resolve_strategy(tpu="local")  # on a TPU VM; no argument elsewhere
    with strategy.scope():
        model = lambda_keras.LambdaResNet50(weights=None)
    ```
    """
    if tpu is not None and not isinstance(tpu, str):
        raise TypeError(f"`{tpu_arg}` must be None, 'local', 'auto' or a TPU name/address "
                        f"string. Received: {tpu_arg}={tpu!r}")
    if tpu is not None and not tpu:
        raise ValueError(f"`{tpu_arg}` must not be empty. Received: {tpu_arg}=''")
    if cluster_resolver is not None:
        return _tpu_strategy(cluster_resolver, tpu != "local", "the given `cluster_resolver`")
    if tpu is not None:
        try:
            resolver = _tpu_resolver(tpu)
        except (ValueError, RuntimeError) as error:
            if tpu != "auto":
                raise ValueError(f"No TPU found ({error}). Received: {tpu_arg}={tpu!r}") from error
        except OSError as error:  # urllib's URLError: a TPU name is looked up over the network
            if tpu != "auto":
                raise ValueError(
                    f"The TPU named by {tpu_arg}={tpu!r} could not be resolved: looking a TPU "
                    "name up needs the Cloud TPU API and the GCE metadata server, which did not "
                    f"answer ({getattr(error, 'reason', error)}). On a TPU VM pass 'local', "
                    "elsewhere the TPU's grpc://host:port address.") from error
        else:
            return _tpu_strategy(resolver, tpu != "local", f"{tpu_arg}={tpu!r}")
    if _tf_config_cluster() is not None:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is not None:
        return tf.distribute.MirroredStrategy(list(devices))
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def check_strategy(strategy):
    """`strategy` (train's, evaluate's) must be a `tf.distribute.Strategy` or None.

    Raises:
        TypeError: anything else (a name such as "mirrored": pass
            `tf.distribute.MirroredStrategy()` or leave it to `resolve_strategy`).
    """
    if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError("`strategy` must be a tf.distribute.Strategy (e.g. "
                        "`training.resolve_strategy()`) or None. "
                        f"Received: strategy={strategy!r}")
    return strategy


def is_tpu_strategy(strategy):
    """Whether `strategy` is a TPU strategy (a class of its MRO is named "TPUStrategy...").

    Args:
        strategy: a `tf.distribute.Strategy` (any object is answered).

    Returns:
        A bool: True for `tf.distribute.TPUStrategy` and its variants (V1, V2, subclasses).

    Example:

    >>> is_tpu_strategy(tf.distribute.get_strategy())
    False
    """
    return any(cls.__name__.startswith("TPUStrategy") for cls in type(strategy).__mro__)


def strategy_name(strategy):
    if is_tpu_strategy(strategy):
        return "TPUStrategy"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
    return type(strategy).__name__.lstrip("_")  # "DefaultDistributionStrategy"


def is_multi_worker(strategy):
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def worker_index(strategy):
    """0 on the chief (the "chief" task, or worker 0 without one), else a positive index."""
    if not is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return 0
    return resolver.task_id + (1 if has_chief else 0)


def resolve_precision(precision, strategy):
    """Keras dtype policy name: "auto" -> mixed_bfloat16 on TPU, float32 elsewhere.

    Args:
        precision: one of `PRECISIONS`: "auto", "float32", "mixed_float16" or "mixed_bfloat16".
        strategy: the `tf.distribute.Strategy` the run uses ("auto" asks whether it is a TPU's).

    Returns:
        The policy name, a str; `precision` itself unless it is "auto".

    Raises:
        ValueError: `precision` is not one of `PRECISIONS` (named as `mixed_precision`, the
            argument of `train`).

    Example:

    >>> resolve_precision("auto", tf.distribute.get_strategy())
    'float32'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`mixed_precision` must be one of {PRECISIONS}. "
                         f"Received: mixed_precision={precision!r}")
    if precision == "auto":
        return "mixed_bfloat16" if is_tpu_strategy(strategy) else "float32"
    return precision


def resolve_jit_compile(jit_compile, strategy):
    """`jit_compile` for `Model.compile`: True/False as given; "auto" as below.

    "auto" -> XLA on a single GPU only:
    - TPU: False here, because TPUStrategy compiles every step with XLA anyway;
    - CPU: False. Measured on the 2-core development machine (TF 2.21), LambdaResNet26T at 32 px,
      batch 32: 541 ms per training step and 26 s to the first step without XLA, 888 ms and
      63 s with it (the lambda convolution compiles poorly on CPU, PERF_NOTES.md);
    - several GPUs / workers: False, as Keras' own "auto" (XLA and tf.distribute collectives).

    Args:
        jit_compile: True, False or "auto" (not 1 / 0).
        strategy: the `tf.distribute.Strategy` the model is compiled under.

    Returns:
        A bool.

    Raises:
        ValueError: `jit_compile` is not True, False or "auto".

    Example:

    >>> strategy = tf.distribute.get_strategy()  # the default strategy: one device
    >>> resolve_jit_compile(False, strategy)
    False
    >>> resolve_jit_compile("auto", strategy) == bool(tf.config.list_logical_devices("GPU"))
    True
    """
    utils.check_choice("jit_compile", jit_compile, (True, False, "auto"))  # not 1/0
    if jit_compile != "auto":
        return jit_compile
    if is_tpu_strategy(strategy) or strategy is not tf.distribute.get_strategy():
        return False
    return bool(tf.config.list_logical_devices("GPU"))


