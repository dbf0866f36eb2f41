"""tensorflow-datasets as a source: `tfds:NAME[:SPLIT]` specs.

A dataset already prepared in `data_dir` (nothing is downloaded: a missing dataset is an error
that says how to prepare it). NAME may carry a config and a version (`imagenet2012`, `tf_flowers`,
`cifar10:3.0.2`); SPLIT, when given, replaces the `split` argument and may slice
(`tfds:tf_flowers:train[:80%]`). `split="validation"` reads the dataset's "validation" split, or
its "test" split when it has none. Images are shuffled still encoded and decoded after the
shuffle buffer (tfds' deferred decoding); grey images become RGB, alpha is dropped.
"""

import os
import re

import tensorflow as tf

from lambda_keras.data.sources import Source

TFDS_SHUFFLE_BUFFER = 10_000
_VERSION_RE = re.compile(r"^(\d+|\*)\.(\d+|\*)\.(\d+|\*)$")


def _parse_tfds_argument(argument):
    """'NAME[:VERSION][:SPLIT]' -> (name, split or None); NAME may be 'name/config'."""
    name, _, rest = argument.partition(":")
    version, _, split = rest.partition(":")
    if _VERSION_RE.match(version):
        return f"{name}:{version}", split or None
    return name, rest or None


def _tfds_builder(name, data_dir, arg="spec"):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"`{arg}` names no tensorflow-datasets dataset: {name!r} "
            f"({str(error).splitlines()[0]}). "
            f"See https://www.tensorflow.org/datasets/catalog. Received: {arg}='tfds:{name}'"
        ) from None
    if not builder.is_prepared():
        manual = ""
        if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
            manual = (
                f" {name} needs a manual download first: put its files in "
                f"{os.path.join(builder.data_dir_root, 'downloads', 'manual')} "
                f"({' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())})."
            )
        raise ValueError(
            f"The tensorflow-datasets dataset {name!r} is not prepared in "
            f"data_dir={builder.data_dir_root} (expected {builder.data_dir}), and make_dataset "
            "never downloads. Prepare it once, where the network is reachable, with "
            f"`tfds build {name} --data_dir={builder.data_dir_root}` or "
            f"`tfds.builder({name!r}, data_dir=...).download_and_prepare()`, then pass that "
            f"data_dir (or set TFDS_DATA_DIR).{manual}"
        )
    return builder


def check_tfds_argument(argument, data_dir=None, arg="spec"):
    """Raise ValueError unless the NAME of a 'tfds:NAME[:SPLIT]' spec (`argument`) is a dataset
    prepared in `data_dir`; `arg` is the argument the messages name."""
    _tfds_builder(_parse_tfds_argument(argument)[0], data_dir, arg)


def _tfds_split(builder, name, split):
    """Resolve `split` against the builder's splits ('validation' falls back to 'test')."""
    available = tuple(builder.info.splits.keys())
    if split == "validation" and "validation" not in available and "test" in available:
        split = "test"
    try:
        num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError) as error:
        raise ValueError(
            f"`split` is not a split of the tensorflow-datasets dataset {name!r}: its splits are "
            f"{available}; slices such as 'tfds:{name}:train[:80%]' / 'tfds:{name}:train[80%:]' "
            f"carve a held-out part ({error}). Received: split={split!r}"
        ) from None
    return split, num_examples


def tfds_source(argument, split, *, data_dir, training, seed):
    import tensorflow_datasets as tfds

    name, spec_split = _parse_tfds_argument(argument)
    builder = _tfds_builder(name, data_dir)
    split, num_examples = _tfds_split(builder, name, spec_split or split)
    if builder.info.supervised_keys is None:
        raise ValueError(
            f"The tensorflow-datasets dataset {name!r} has no (image, label) supervised keys."
        )
    image_key, label_key = builder.info.supervised_keys
    image_feature = builder.info.features[image_key]
    label_feature = builder.info.features[label_key]
    if not hasattr(label_feature, "names"):
        raise ValueError(
            f"The tensorflow-datasets dataset {name!r} has no class labels ({label_key!r})."
        )
    # Shuffle still-encoded images; decode after the shuffle buffer (tfds' deferred decoding).
    deferred = isinstance(image_feature, tfds.features.Image)
    examples = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=training,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
        decoders={image_key: tfds.decode.SkipDecoding()} if deferred else None,
    )
    examples = examples.map(lambda image, label: (image, tf.cast(label, tf.int32)))

    def decode(image):
        image = image_feature.decode_example(image) if deferred else image  # (h, w, c) uint8
        channels = image.shape[-1]
        if channels == 1:
            return tf.image.grayscale_to_rgb(image)
        if channels != 3:
            return image[..., :3]  # drop alpha
        return image

    return Source(
        examples=examples,
        decode=decode,
        split=split,
        class_names=tuple(label_feature.names),
        num_examples=num_examples,
        shuffle_buffer=min(num_examples, TFDS_SHUFFLE_BUFFER),
    )

