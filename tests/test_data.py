"""Tests for lambda_keras.data: dataset specs, transforms, errors (augmentation: test_augment.py).

Independent expectations: a PIL + NumPy reference of timm's eval transform (resize the shorter
side, center crop, normalise) on scikit-learn's sample photo; scikit-learn's own digits arrays for
the hold-out split (a multiset partition); images written here with PIL whose colour encodes their
class; a tiny tensorflow-datasets builder prepared here (nothing is downloaded) that goes through
the same `tfds.builder` / `as_dataset` path as `tfds:imagenet2012`; properties of the augmentations
(a full-image random resized crop is a plain resize, possibly mirrored; MixUp/CutMix labels are
distributions over at most two classes).
"""

import collections
import io
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from lambda_keras import data
from lambda_keras.weights import DEFAULT_PREPROCESSING, Preprocessing

from helpers import SMALL_DATA, dataset_batches

# Preprocessing that makes the eval transform an identity on 8x8 digits: no resize (8 / 1.0 = 8),
# no crop, and normalised values pixels / 255.
IDENTITY_8 = Preprocessing(input_size=(8, 8), crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
# Colours of the classes of the folder / tfds fixtures: the class is readable from any pixel.
COLOURS = {"blue": (20, 40, 230), "red": (230, 30, 20), "yellow": (240, 220, 10)}


def _nearest_colour(image, preprocessing=DEFAULT_PREPROCESSING):
    """Class index of the colour closest to the mean pixel of a normalised image."""
    pixels = (image * np.array(preprocessing.std) + np.array(preprocessing.mean)) * 255.0
    mean = pixels.reshape(-1, 3).mean(axis=0)
    colours = np.array(list(COLOURS.values()), "float64")
    return int(np.argmin(np.linalg.norm(colours - mean, axis=1)))


# --------------------------------------------------------------------------------------------
# Transforms against PIL / NumPy


def _pil_eval_reference(image, size, crop_pct, resample, mean, std):
    """timm/torchvision eval transform with PIL: Resize(floor(size / crop_pct)), CenterCrop."""
    height, width = image.shape[:2]
    scale = math.floor(size / crop_pct)
    if width <= height:
        new_w, new_h = scale, int(scale * height / width)
    else:
        new_w, new_h = int(scale * width / height), scale
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample), "float64")
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    crop = resized[top : top + size, left : left + size]
    return (crop / 255.0 - np.array(mean)) / np.array(std), resized, (top, left)


@pytest.mark.parametrize(
    "interpolation, resample", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)]
)
def test_eval_transform_matches_pil_reference(interpolation, resample):
    from sklearn.datasets import load_sample_image

    image = load_sample_image("china.jpg")  # (427, 640, 3) uint8
    pre = Preprocessing(input_size=(224, 224), crop_pct=0.875, interpolation=interpolation)
    ref, resized, (top, left) = _pil_eval_reference(image, 224, 0.875, resample, pre.mean, pre.std)
    out = data.eval_transform(image, pre).numpy()
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    # Tolerance, in grey levels: PIL resamples uint8 in two separable passes with fixed-point
    # weights and rounds to uint8 after each pass, TF resamples in float32 once, so single pixels
    # differ by a few levels where bicubic's negative lobes amplify the rounding (measured: max
    # 3.4, mean 0.28 levels for bicubic). A crop off by one pixel, the bug this test is for,
    # costs far more on average (checked below), as does a resize without antialiasing.
    levels = np.abs(out - ref) * np.array(pre.std) * 255.0
    assert levels.max() <= 6.0
    assert levels.mean() <= 0.5
    shifted = resized[top + 1 : top + 225, left + 1 : left + 225] / 255.0
    shifted_levels = np.abs(shifted - (ref * np.array(pre.std) + np.array(pre.mean))) * 255.0
    assert shifted_levels.mean() > 4 * levels.mean()


def test_eval_transform_batch_and_image_size():
    from sklearn.datasets import load_sample_image

    image = load_sample_image("flower.jpg")[:300, :400]  # (300, 400, 3)
    single = data.eval_transform(image, image_size=(96, 96)).numpy()
    batch = data.eval_transform(np.stack([image, image[:, ::-1]]), image_size=96).numpy()
    assert batch.shape == (2, 96, 96, 3)
    np.testing.assert_allclose(batch[0], single, atol=1e-5)
    # Crop offsets round half to even, like torchvision's round(): 300 x 400 -> 109 x 145, so
    # left = round(49 / 2) = 24 and the mirrored image's crop starts one column further.
    np.testing.assert_allclose(batch[1][:, ::-1][:, :-1], single[:, 1:], atol=1e-4)


def test_normalize_formula():
    pixels = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    pre = Preprocessing(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    expected = (pixels / 255.0 - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(data.normalize(pixels, pre).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_train_transform_full_crop_is_resize_or_mirror():
    image = np.random.default_rng(1).integers(0, 256, (48, 48, 3)).astype(np.uint8)
    plain = data.normalize(tf.image.resize(image, (24, 24), "bicubic", antialias=True)).numpy()
    flips = []
    for seed in range(8):
        out = data.train_transform(
            image, image_size=24, seed=[seed, 0], scale=(1.0, 1.0), ratio=(1.0, 1.0)
        ).numpy()
        assert out.shape == (24, 24, 3)
        is_plain = np.allclose(out, plain, atol=2e-2)
        is_mirror = np.allclose(out, plain[:, ::-1], atol=2e-2)
        assert is_plain or is_mirror
        flips.append(is_mirror)
    assert 0 < sum(flips) < len(flips)  # the flip is random


def test_train_transform_crop_is_random_and_seeded():
    from sklearn.datasets import load_sample_image

    image = load_sample_image("china.jpg")
    a = data.train_transform(image, image_size=64, seed=[3, 4]).numpy()
    b = data.train_transform(image, image_size=64, seed=[3, 4]).numpy()
    c = data.train_transform(image, image_size=64, seed=[5, 6]).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.1


# --------------------------------------------------------------------------------------------
# digits


def _digit_keys(ds):
    """(label, 8x8 uint8 image bytes) of every example of an identity-preprocessed dataset."""
    keys = []
    for images, labels in ds:
        grey = np.round(images.numpy()[..., 0] * 255.0).astype(np.uint8)  # (B, 8, 8)
        keys.extend((int(y), x.tobytes()) for x, y in zip(grey, labels.numpy()))
    return keys


def test_digits_holdout_partitions_sklearn_data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    expected = collections.Counter(
        (int(y), np.round(x * 255.0 / 16.0).astype(np.uint8).tobytes())
        for x, y in zip(digits.images, digits.target)
    )
    keys, infos = {}, {}
    for split in ("train", "test", "validation"):
        ds, infos[split] = data.make_dataset(
            "digits", split, training=False, preprocessing=IDENTITY_8, batch_size=100
        )
        keys[split] = _digit_keys(ds)
    assert (infos["train"].num_examples, infos["test"].num_examples) == (1437, 360)
    assert [len(keys[s]) for s in ("train", "test")] == [1437, 360]
    # Every sklearn example is in exactly one of train / test (a multiset partition: a few digits
    # images are exact duplicates, so plain sets would not do).
    assert collections.Counter(keys["train"]) + collections.Counter(keys["test"]) == expected
    assert keys["validation"] == keys["test"]  # alias, same order
    # Stratified: each class keeps its share of the 20 % hold-out, within one example.
    test_counts = collections.Counter(label for label, _ in keys["test"])
    for label, total in collections.Counter(digits.target.tolist()).items():
        assert abs(test_counts[label] - 0.2 * total) <= 1
    assert infos["train"].class_names == tuple("0123456789")


def test_digits_split_is_deterministic_and_seed_independent():
    first, _ = data.make_dataset("digits", "test", training=False, preprocessing=IDENTITY_8,
                                 batch_size=360)
    second, _ = data.make_dataset("digits", "test", training=False, preprocessing=IDENTITY_8,
                                  batch_size=360, seed=123)
    assert _digit_keys(first) == _digit_keys(second)


def test_training_dataset_has_static_shapes_and_drops_remainder():
    ds, info = data.make_dataset("digits", "train", seed=0, **SMALL_DATA)
    images_spec, labels_spec = ds.element_spec
    assert images_spec.shape == (16, 32, 32, 3) and images_spec.dtype == tf.float32
    assert labels_spec.shape == (16,) and labels_spec.dtype == tf.int32
    batches = dataset_batches(ds)
    assert len(batches) == info.steps_per_epoch == 1437 // 16
    assert all(x.shape == (16, 32, 32, 3) and np.isfinite(x).all() for x, _ in batches)
    # Shuffled: the first batch is not the first 16 training labels in order.
    eval_labels = np.concatenate([y for _, y in dataset_batches(data.make_dataset(
        "digits", "train", training=False, **SMALL_DATA)[0])])
    assert not np.array_equal(batches[0][1], eval_labels[:16])


def test_eval_dataset_keeps_every_example():
    ds, info = data.make_dataset("digits", "test", **SMALL_DATA)
    assert ds.element_spec[0].shape == (None, 32, 32, 3)
    sizes = [x.shape[0] for x, _ in dataset_batches(ds)]
    assert sum(sizes) == info.num_examples == 360 and len(sizes) == info.steps_per_epoch == 23


def test_repeat_and_static_eval_batches():
    ds, info = data.make_dataset("digits", "test", repeat=True, drop_remainder=True, **SMALL_DATA)
    assert ds.element_spec[0].shape == (16, 32, 32, 3)
    assert info.steps_per_epoch == 360 // 16
    assert len(list(ds.take(info.steps_per_epoch * 2 + 3))) == info.steps_per_epoch * 2 + 3


def test_crop_scale_reaches_the_random_resized_crop():
    # A full-area crop of a square digit is a plain resize, which is also the eval transform
    # with crop_pct=1; the flip stays random. Same seed: same shuffle in both pipelines.
    common = dict(batch_size=8, seed=4, preprocessing=Preprocessing(input_size=(16, 16),
                                                                    crop_pct=1.0))
    crops, labels = dataset_batches(data.make_dataset("digits", crop_scale=(1.0, 1.0),
                                               **common)[0].take(1))[0]
    plain, plain_labels = dataset_batches(data.make_dataset("digits", augment=None,
                                                     **common)[0].take(1))[0]
    np.testing.assert_array_equal(labels, plain_labels)
    mirrored = [np.allclose(c, p[:, ::-1], atol=1e-4) for c, p in zip(crops, plain)]
    for crop, image, is_mirror in zip(crops, plain, mirrored):
        assert is_mirror or np.allclose(crop, image, atol=1e-4)
    # The default (0.08, 1) crops do change the images.
    default, _ = dataset_batches(data.make_dataset("digits", **common)[0].take(1))[0]
    assert np.abs(default - plain).mean() > 0.1


def test_seed_makes_the_pipeline_reproducible():
    def first_batch(seed):
        return dataset_batches(data.make_dataset("digits", seed=seed, **SMALL_DATA)[0].take(1))[0]

    a, b, c = first_batch(7), first_batch(7), first_batch(8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


# --------------------------------------------------------------------------------------------
# folder:PATH


def _write_images(folder, counts, size=(20, 28)):
    """folder/CLASS/i.{png,jpg} filled with the class colour; sizes vary per image."""
    for name, count in counts.items():
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for i in range(count):
            pixels = np.zeros((size[0] + i, size[1] + 2 * i, 3), np.uint8) + COLOURS[name]
            path = os.path.join(folder, name, f"{i}.{'png' if i % 2 else 'jpg'}")
            Image.fromarray(pixels.astype(np.uint8)).save(path)


def test_folder_spec_reads_class_folders(tmp_path):
    _write_images(tmp_path, {"red": 5, "blue": 5, "yellow": 5})
    spec = f"folder:{tmp_path}"
    ds, info = data.make_dataset(spec, "all", training=False, image_size=16, batch_size=4)
    assert info.class_names == ("blue", "red", "yellow")  # sorted, like Keras
    assert info.num_examples == 15
    colour_index = {name: i for i, name in enumerate(COLOURS)}
    for images, labels in dataset_batches(ds):
        for image, label in zip(images, labels):
            assert colour_index[info.class_names[label]] == _nearest_colour(image)
    # The fixed hold-out: 4 + 1 images per class, disjoint.
    train, train_info = data.make_dataset(spec, "train", training=False, image_size=16,
                                          batch_size=64)
    test, test_info = data.make_dataset(spec, "test", image_size=16, batch_size=64)
    assert (train_info.num_examples, test_info.num_examples) == (12, 3)
    assert sorted(dataset_batches(test)[0][1].tolist()) == [0, 1, 2]
    # Training pipeline: static shapes, augmentation runs on the decoded files.
    ds, _ = data.make_dataset(spec, "train", image_size=16, batch_size=4, augment="randaugment",
                              seed=0)
    assert ds.element_spec[0].shape == (4, 16, 16, 3)
    assert len(dataset_batches(ds)) == 3


def test_a_tensorflow_without_webp_names_webp_files_as_not_images(tmp_path):
    """TensorFlow 2.18 (the lowest pin) has no WebP decoder: there .webp files are named as files
    that are not images, before training; where it has one, they are images (below)."""
    _write_images(tmp_path, {"red": 2, "blue": 2})
    Image.new("RGB", (6, 6)).save(tmp_path / "red" / "x.webp", lossless=True)
    spec = f"folder:{tmp_path}"
    if data.folders.WEBP:
        assert data.make_dataset(spec, "all", image_size=16)[1].num_examples == 5
        assert ".webp" in data.IMAGE_EXTENSIONS and "WebP" in data.IMAGE_FORMATS
    else:
        with pytest.raises(ValueError, match=rf"not images.*{re.escape(str(tmp_path))}.*x\.webp"):
            data.make_dataset(spec, "all", image_size=16)
        assert ".webp" not in data.IMAGE_EXTENSIONS and "WebP" not in data.IMAGE_FORMATS


@pytest.mark.skipif(not data.folders.WEBP, reason="this TensorFlow decodes no WebP (test above)")
def test_folder_spec_reads_webp_and_bmp_and_names_a_cut_webp(tmp_path):
    """Every format tf.io.decode_image reads (predict reads them too): lossless WebP and BMP
    decode to their exact pixels; a WebP shorter than its RIFF header says, or a RIFF file that
    is not WebP, is named before training."""
    pixels = {"blue": np.full((6, 6, 3), COLOURS["blue"], np.uint8),
              "red": np.random.default_rng(0).integers(0, 256, (6, 6, 3), np.uint8)}
    for name, image in pixels.items():
        os.makedirs(tmp_path / "ok" / name)
        Image.fromarray(image).save(tmp_path / "ok" / name / "a.webp", lossless=True)
        Image.fromarray(image).save(tmp_path / "ok" / name / "b.bmp")
    preprocessing = data.Preprocessing(input_size=(6, 6), crop_pct=1.0, mean=(0, 0, 0),
                                       std=(1 / 255,) * 3)
    ds, info = data.make_dataset(f"folder:{tmp_path / 'ok'}", "all", training=False,
                                 image_size=6, batch_size=4, preprocessing=preprocessing)
    images, labels = dataset_batches(ds)[0]
    assert info.class_names == ("blue", "red") and info.num_examples == 4
    for image, label in zip(images, labels):
        np.testing.assert_allclose(image, pixels[info.class_names[label]], atol=1e-3)
    webp = (tmp_path / "ok" / "red" / "a.webp").read_bytes()
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    os.makedirs(tmp_path / "bad" / "red")
    _write_images(tmp_path / "bad", {"blue": 2})
    cut = tmp_path / "bad" / "red" / "cut.webp"
    cut.write_bytes(webp[:-10])
    wave = tmp_path / "bad" / "red" / "sound.webp"
    wave.write_bytes(b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + bytes(28))
    with pytest.raises(ValueError, match=rf"2 unreadable image.*{re.escape(str(cut))} "
                                         rf"\(truncated; cannot be decoded.*{re.escape(str(wave))} "
                                         r"\(not a BMP, GIF, JPEG, PNG, WebP image\)"):
        data.make_dataset(f"folder:{tmp_path / 'bad'}", "all")


def test_folder_spec_with_split_folders(tmp_path):
    _write_images(tmp_path / "train", {"red": 3, "blue": 2})
    _write_images(tmp_path / "val", {"red": 1, "blue": 2})
    ds, info = data.make_dataset(f"folder:{tmp_path}", "validation", image_size=16, batch_size=8)
    assert info.num_examples == 3 and info.class_names == ("blue", "red")
    labels = dataset_batches(ds)[0][1]
    assert sorted(labels.tolist()) == [0, 0, 1]
    with pytest.raises(ValueError, match=r"split.*no split folder.*found train, val.*split='test'"):
        data.make_dataset(f"folder:{tmp_path}", "test")


def test_folder_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=rf"folder that does not exist: {re.escape(str(missing))}"):
        data.make_dataset(f"folder:{missing}")

    _write_images(tmp_path / "a", {"red": 2, "blue": 2})
    os.makedirs(tmp_path / "a" / "green")
    green = re.escape(str(tmp_path / "a" / "green"))
    with pytest.raises(ValueError, match=rf"class folder {green} is empty"):
        data.make_dataset(f"folder:{tmp_path / 'a'}")

    _write_images(tmp_path / "b", {"red": 2, "blue": 2})
    corrupt = tmp_path / "b" / "red" / "broken.jpg"
    corrupt.write_bytes(b"this is not a JPEG at all")
    with pytest.raises(ValueError, match=rf"1 unreadable image.*{re.escape(str(corrupt))} \(not a"):
        data.make_dataset(f"folder:{tmp_path / 'b'}")

    _write_images(tmp_path / "c", {"red": 2, "blue": 2})
    notes = tmp_path / "c" / "blue" / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(ValueError, match=rf"not images.*{re.escape(str(notes))}"):
        data.make_dataset(f"folder:{tmp_path / 'c'}")

    # Cut-short files (issue: a truncated PNG used to fail mid-epoch without its name): the scan
    # sees the missing end marker, confirms by decoding, and names the file before training.
    _write_images(tmp_path / "d", {"red": 2, "blue": 2})
    jpeg = (tmp_path / "d" / "red" / "0.jpg").read_bytes()
    truncated = tmp_path / "d" / "red" / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])  # valid header, no end-of-image marker
    png = io.BytesIO()
    Image.new("RGB", (20, 12), COLOURS["blue"]).save(png, "PNG")
    cut_png = tmp_path / "d" / "blue" / "cut.png"
    cut_png.write_bytes(png.getvalue()[: len(png.getvalue()) - 20])  # IEND chunk lost
    with pytest.raises(ValueError, match=rf"2 unreadable image.*{re.escape(str(cut_png))} "
                                         r"\(truncated; cannot be decoded.*"
                                         rf"{re.escape(str(truncated))} \(truncated"):
        data.make_dataset(f"folder:{tmp_path / 'd'}", "all")
    # A complete file with damage inside passes the scan; verify_images decodes and names it.
    _write_images(tmp_path / "f", {"red": 2, "blue": 2})
    damaged = bytearray(png.getvalue())
    damaged[damaged.index(b"IDAT") + 6] ^= 0xFF  # the image data's CRC no longer matches
    inner = tmp_path / "f" / "blue" / "damaged.png"
    inner.write_bytes(bytes(damaged))
    data.make_dataset(f"folder:{tmp_path / 'f'}", "all")  # the header/end check passes ...
    with pytest.raises(ValueError, match=rf"{re.escape(str(inner))} \(cannot be decoded"):
        data.make_dataset(f"folder:{tmp_path / 'f'}", "all", verify_images=True)  # ... decoding not

    _write_images(tmp_path / "e", {"red": 1, "blue": 3})
    with pytest.raises(ValueError, match=r"class 'red' has 1 example.*split='all'"):
        data.make_dataset(f"folder:{tmp_path / 'e'}", "train")


# --------------------------------------------------------------------------------------------
# tfds:NAME[:SPLIT] with a dataset built here


class LambdaKerasTestColours(tfds.core.GeneratorBasedBuilder):
    """Solid-colour images of three classes, various sizes; 'train' and 'test' splits."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=list(COLOURS)),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(12), "test": self._generate_examples(6)}

    def _generate_examples(self, count):
        for i in range(count):
            label = i % len(COLOURS)
            colour = list(COLOURS.values())[label]
            image = np.full((20 + i, 30, 3), colour, np.uint8)
            yield i, {"image": image, "label": label}


class LambdaKerasTestChannels(tfds.core.GeneratorBasedBuilder):
    """Grey (1 channel) or RGBA (4 channels) images, one builder config each; a 'train' split."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="grey"), tfds.core.BuilderConfig(name="rgba")]

    def _channels(self):
        return {"grey": 1, "rgba": 4}[self.builder_config.name]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, self._channels())),
                "label": tfds.features.ClassLabel(names=["dark", "light"]),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(4):
            image = np.full((10, 12, self._channels()), 50 + 150 * (i % 2), np.uint8)
            yield i, {"image": image, "label": i % 2}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.disable_progress_bar()
    for name in ("lambda_keras_test_colours", "lambda_keras_test_channels/grey",
                 "lambda_keras_test_channels/rgba"):
        tfds.builder(name, data_dir=data_dir).download_and_prepare()
    return data_dir


def test_tfds_spec_reads_prepared_dataset(tfds_dir):
    spec = "tfds:lambda_keras_test_colours"
    ds, info = data.make_dataset(spec, "train", data_dir=tfds_dir, seed=0, image_size=16,
                                 batch_size=4)
    assert ds.element_spec[0].shape == (4, 16, 16, 3) and ds.element_spec[1].dtype == tf.int32
    assert (info.num_examples, info.num_classes, info.steps_per_epoch) == (12, 3, 3)
    assert info.class_names == tuple(COLOURS)
    assert len(dataset_batches(ds)) == 3
    # "validation" falls back to the dataset's "test" split; labels agree with the colours.
    ds, info = data.make_dataset(spec, "validation", data_dir=tfds_dir, image_size=16,
                                 batch_size=4)
    assert info.split == "test" and info.num_examples == 6
    for images, labels in dataset_batches(ds):
        assert [_nearest_colour(x) for x in images] == labels.tolist()
    # A split in the spec, with tfds slicing, replaces the `split` argument.
    _, info = data.make_dataset(spec + ":train[:50%]", "validation", data_dir=tfds_dir,
                                image_size=16, batch_size=4)
    assert info.split == "train[:50%]" and info.num_examples == 6


@pytest.mark.parametrize("config", ["grey", "rgba"])
def test_tfds_grey_and_rgba_become_rgb(tfds_dir, config):
    identity = Preprocessing(input_size=(10, 12), crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    # Config and version in the spec, as tfds.builder accepts them.
    spec = f"tfds:lambda_keras_test_channels/{config}:1.0.0:train"
    ds, info = data.make_dataset(spec, "test", data_dir=tfds_dir, preprocessing=identity,
                                 batch_size=4)
    assert info.split == "train" and info.class_names == ("dark", "light")
    images, labels = dataset_batches(ds)[0]
    assert images.shape == (4, 10, 12, 3)
    expected = (50 + 150 * labels) / 255.0  # the grey level (RGBA: the RGB part) of each image
    np.testing.assert_allclose(images, np.broadcast_to(expected[:, None, None, None],
                                                       images.shape), atol=1e-6)


def test_tfds_errors(tfds_dir, tmp_path):
    with pytest.raises(ValueError, match=r"not prepared.*tfds build lambda_keras_test_colours"
                                         rf" --data_dir={re.escape(str(tmp_path))}"):
        data.make_dataset("tfds:lambda_keras_test_colours", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"needs a manual download.*downloads.manual"):
        data.make_dataset("tfds:imagenet2012", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"no tensorflow-datasets dataset: 'no_such_dataset_xyz'"):
        data.make_dataset("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"its splits are \(.*'train'.*split='extra'"):
        data.make_dataset("tfds:lambda_keras_test_colours:extra", data_dir=tfds_dir)


def test_check_spec_names_the_argument_given(tfds_dir, tmp_path):
    """The early check of a spec (the command line's --data, --validation-data,
    --calibration-data): make_dataset's messages, naming `arg`; a good spec passes."""
    for spec, message in (
            ("mnist", r"`--data` must be 'tfds:NAME\[:SPLIT\]'.*Received: --data='mnist'"),
            (f"folder:{tmp_path / 'nope'}", r"`--data` names a folder that does not exist"),
            ("tfds:no_such_dataset_xyz", r"`--data` names no tensorflow-datasets dataset"),
            ("tfds:lambda_keras_test_colours", r"not prepared")):
        with pytest.raises(ValueError, match=message):
            data.check_spec(spec, data_dir=str(tmp_path), arg="--data")
    for spec in ("digits", f"folder:{tmp_path}", "tfds:lambda_keras_test_colours:train"):
        data.check_spec(spec, data_dir=tfds_dir)


# --------------------------------------------------------------------------------------------
# Argument errors


@pytest.mark.parametrize(
    "spec, kwargs, error, message",
    [
        ("imagenet", {}, ValueError, r"`spec` must be 'tfds:NAME\[:SPLIT\]', 'folder:PATH' or "
         r"'digits' \(schemes: tfds, folder, digits\). Received: spec='imagenet'"),
        ("s3:bucket/x", {}, ValueError, r"schemes.*Received: spec='s3:bucket/x'"),
        ("folder:", {}, ValueError, r"needs a PATH"),
        ("digits:extra", {}, ValueError, r"'digits' takes no argument"),
        (42, {}, TypeError, r"`spec` must be a string. Received: spec=42"),
        ("digits", {"split": "holdout"}, ValueError, r"`split` must be one of .*split='holdout'"),
        ("digits", {"split": 3}, TypeError,
         r"`split` must be a non-empty string. Received: split=3"),
        ("digits", {"split": ""}, ValueError, r"`split` must be a non-empty string"),
        ("digits", {"repeat": 1}, TypeError, r"`repeat` must be a bool. Received: repeat=1"),
        ("digits", {"augment": "autoaugment"}, ValueError, r"`augment` must be one of"),
        ("digits", {"batch_size": 0}, ValueError, r"`batch_size` must be an int >= 1"),
        ("digits", {"batch_size": 2000}, ValueError, r"larger than the 1437 examples"),
        ("digits", {"cutmix_alpha": 2.0}, ValueError,
         r"`cutmix_alpha` must be a finite number >= 0 and <= 1. Received: cutmix_alpha=2.0"),
        ("digits", {"mixup_alpha": -1}, ValueError, r"`mixup_alpha` must be a finite number >= 0"),
        ("digits", {"mixup_alpha": 0.2, "one_hot": False}, ValueError, r"one_hot=False"),
        ("digits", {"augment": "randaugment", "randaugment_magnitude": 40}, ValueError,
         r"`randaugment_magnitude` must be a finite number >= 0 and <= 30"),
        ("digits", {"augment": "randaugment", "randaugment_layers": 0}, ValueError,
         r"`randaugment_layers` must be an int >= 1. Received: randaugment_layers=0"),
        ("digits", {"image_size": (32,)}, ValueError, r"`image_size` must be"),
        ("digits", {"crop_scale": (0.5, 0.2)}, ValueError, r"crop_scale=\(0.5, 0.2\)"),
        ("digits", {"data_dir": "/data"}, ValueError, r"`data_dir` only applies to 'tfds:'"),
        ("digits", {"verify_images": True}, ValueError, r"`verify_images` only applies"),
        ("digits", {"preprocessing": Preprocessing(interpolation="lanczos")}, ValueError,
         r"Received: preprocessing.interpolation='lanczos'"),
        ("digits", {"preprocessing": Preprocessing(crop_pct=0.0)}, ValueError,
         r"`preprocessing.crop_pct` must be in \(0, 1\]. Received: preprocessing.crop_pct=0.0"),
        ("digits", {"preprocessing": {"mean": 0}}, TypeError, r"`preprocessing` must be"),
    ],
)
def test_argument_errors(spec, kwargs, error, message):
    split = kwargs.pop("split", "train")
    with pytest.raises(error, match=message):
        data.make_dataset(spec, split, **kwargs)
