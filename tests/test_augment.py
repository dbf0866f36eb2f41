"""Tests for lambda_keras.data's augmentations: RandAugment, MixUp, CutMix.

Independent expectations: the reference RandAugment of tensorflow/tpu (ResNet-RS: its magnitudes,
two-sided geometric ops, grey fill; PIL's ImageOps for the ops it ports), measured on images with
a white marker whose movement gives the angle / shift / shear; MixUp/CutMix labels are
distributions over at most two classes, evaluation labels stay one-hot.
"""

import math

import numpy as np
import pytest
from PIL import Image

from lambda_keras import data

from helpers import SMALL_DATA, dataset_batches


def test_randaugment_path_runs_is_seeded_and_changes_images():
    common = dict(seed=5, **SMALL_DATA)
    plain = dataset_batches(data.make_dataset("digits", augment="imagenet", **common)[0].take(2))
    rand = dataset_batches(data.make_dataset("digits", augment="randaugment",
                                             randaugment_magnitude=15, **common)[0].take(2))
    again = dataset_batches(data.make_dataset("digits", augment="randaugment",
                                              randaugment_magnitude=15, **common)[0].take(2))
    for (x0, y0), (x1, y1), (x2, _) in zip(plain, rand, again):
        np.testing.assert_array_equal(y0, y1)  # same seed: same shuffle, same crops and flips
        assert x1.shape == (16, 32, 32, 3) and np.isfinite(x1).all()
        changed = np.abs(x1 - x0).reshape(16, -1).max(axis=1) > 1e-3
        assert changed.mean() >= 0.5  # RandAugment altered most images
        np.testing.assert_array_equal(x1, x2)  # per-example stateless seeds: reproducible


# The reference: tensorflow/tpu models/official/efficientnet/autoaugment.py (ResNet-RS's
# RandAugment), level = M / 10: rotate 30 * level degrees, shear 0.3 * level, translate
# 100 * level pixels (randaugment's translate_const), enhance 1.8 * level + 0.1, posterize
# int(4 * level) bits, solarize threshold int(256 * level), solarize-add int(110 * level),
# cutout half-side int(40 * level); geometric ops with a random sign, grey 128 fill.
REFERENCE_AT_M10 = {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3, "TranslateX": 100.0,
                    "TranslateY": 100.0, "Color": 1.9, "Contrast": 1.9, "Brightness": 1.9,
                    "Sharpness": 1.9, "Posterize": 4, "Solarize": 256, "SolarizeAdd": 110,
                    "Cutout": 40}


def _marker_image(size, row, column):
    image = np.zeros((size, size, 3), "float32")
    image[row - 1 : row + 2, column - 1 : column + 2] = 255.0  # a 3x3 white marker
    return image


def _marker_position(image):
    rows, columns = np.nonzero(image[..., 0] > 200)  # the fill is grey 128, the marker 255
    assert len(rows), "the marker left the image"
    return rows.mean(), columns.mean()


def _one_op(name, magnitude, image, draws=40):
    augment = data.RandAugment(num_layers=1, magnitude=magnitude, ops=(name,))
    return [augment(image, seed=[i, 7]).numpy() for i in range(draws)]


@pytest.mark.parametrize("magnitude", [10, 5])
def test_randaugment_rotation_is_two_sided_and_at_the_reference_angle(magnitude):
    centre, radius = 32, 20  # 65x65: the rotation centre is pixel (32, 32)
    image = _marker_image(65, centre, centre + radius)  # at angle 0, right of the centre
    angles = []
    for out in _one_op("Rotate", magnitude, image):
        row, column = _marker_position(out)
        angles.append(math.degrees(math.atan2(row - centre, column - centre)))
    expected = 30.0 * magnitude / 10  # +-30 degrees at M=10
    angles = np.array(angles)
    print(f"M={magnitude}: rotation angles", sorted(set(np.round(angles, 1))))
    np.testing.assert_allclose(np.abs(angles), expected, atol=2.0)  # nearest-pixel sampling
    assert (angles > 0).sum() >= 10 and (angles < 0).sum() >= 10  # both directions drawn


def test_randaugment_translation_and_shear_match_the_reference_bounds():
    image = _marker_image(256, 100, 128)
    shifts = set()
    for name in ("TranslateX", "TranslateY"):
        for out in _one_op(name, 10, image, draws=20):
            row, column = _marker_position(out)
            shifts.add((name, round(row - 100), round(column - 128)))
    # +-100 px at M=10, along its own axis only, both signs.
    assert shifts == {("TranslateX", 0, 100), ("TranslateX", 0, -100),
                      ("TranslateY", 100, 0), ("TranslateY", -100, 0)}
    shears = set()
    for out in _one_op("ShearX", 10, image, draws=20):
        row, column = _marker_position(out)
        shears.add((round(row - 100), round((column - 128) / 100, 2)))  # x moves by -+0.3 * y
    assert shears == {(0, 0.3), (0, -0.3)}
    # Pixels moved in from outside are the reference's grey.
    moved = _one_op("TranslateX", 10, np.full((256, 256, 3), 50.0, "float32"), draws=1)[0]
    assert set(np.unique(moved)) == {50.0, 128.0} and (moved == 128).mean() == pytest.approx(
        100 / 256)


def test_randaugment_arguments_and_pixel_ops_match_the_reference():
    assert data.RandAugment(magnitude=10).arguments() == pytest.approx(REFERENCE_AT_M10)
    at_15 = data.RandAugment(magnitude=15).arguments()
    assert at_15["Rotate"] == 45.0 and at_15["TranslateX"] == 150.0 and at_15["Posterize"] == 6
    assert len(data.RANDAUGMENT_OPS) == 16
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 24, 3)).astype("uint8")
    x = image.astype("int64")

    def run(name, magnitude=10, source=image):
        return _one_op(name, magnitude, source.astype("float32"), draws=1)[0].astype("int64")

    np.testing.assert_array_equal(run("Invert"), 255 - x)
    np.testing.assert_array_equal(run("Brightness"), np.clip(np.floor(x * 1.9), 0, 255))
    np.testing.assert_array_equal(run("Posterize"), x & 0b11110000)  # 4 bits at M=10
    np.testing.assert_array_equal(run("Solarize", 5), np.where(x < 128, x, 255 - x))
    np.testing.assert_array_equal(run("Solarize", 10), x)  # threshold 256: unchanged
    np.testing.assert_array_equal(run("SolarizeAdd"), np.where(x < 128, np.minimum(x + 110, 255),
                                                               x))
    # PIL's ImageOps, which the reference ports.
    from PIL import ImageOps

    pil = Image.fromarray(image)
    np.testing.assert_array_equal(run("AutoContrast"), np.asarray(ImageOps.autocontrast(pil)))
    np.testing.assert_array_equal(run("Equalize"), np.asarray(ImageOps.equalize(pil)))
    # Cutout: one grey square of side 2 * 40 at M=10 (the image is large enough to hold it).
    flat = np.full((200, 200, 3), 10.0, "float32")
    grey = (_one_op("Cutout", 10, flat, draws=1)[0][..., 0] == 128)
    rows, columns = np.nonzero(grey)
    assert grey.sum() == (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)
    assert max(rows.max() - rows.min(), columns.max() - columns.min()) + 1 <= 80


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(num_layers=0), ValueError, "`num_layers` must be an int >= 1. Received: num_layers=0"),
    (dict(num_layers=2.0), TypeError, "Received: num_layers=2.0"),
    (dict(magnitude=31), ValueError,
     "`magnitude` must be a finite number >= 0 and <= 30. Received: magnitude=31"),
])
def test_randaugment_refusals_name_the_constructor_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        data.RandAugment(**kwargs)


def _check_soft_labels(labels, num_classes):
    assert labels.dtype == np.float32 and labels.shape[1] == num_classes
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert (labels >= -1e-6).all() and (labels <= 1 + 1e-6).all()
    assert ((labels > 1e-6).sum(axis=1) <= 2).all()  # a mix of at most two examples


@pytest.mark.parametrize(
    "mixing",
    [dict(mixup_alpha=0.8), dict(cutmix_alpha=1.0), dict(mixup_alpha=0.8, cutmix_alpha=1.0)],
)
def test_mixup_cutmix_soft_labels(mixing):
    ds, info = data.make_dataset("digits", seed=2, **SMALL_DATA, **mixing)
    assert ds.element_spec[1].shape == (16, 10) and ds.element_spec[0].shape == (16, 32, 32, 3)
    labels = np.concatenate([y for _, y in dataset_batches(ds.take(6))])
    _check_soft_labels(labels, info.num_classes)
    assert (labels.max(axis=1) < 0.999).mean() > 0.1  # labels really are mixed
    # Evaluation datasets of the same run get one-hot labels, unmixed.
    eval_ds, _ = data.make_dataset("digits", "test", **SMALL_DATA, **mixing)
    eval_labels = dataset_batches(eval_ds.take(1))[0][1]
    assert set(np.unique(eval_labels)) == {0.0, 1.0}
    np.testing.assert_array_equal(eval_labels.sum(axis=1), 1.0)
