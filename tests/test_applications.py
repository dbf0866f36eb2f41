"""Keras' applications test semantics (keras/src/applications/applications_test.py) on our builders,
plus a sweep of input sizes that hits every rounding case of every stride.

Adapted from Keras' file (which needs the ImageNet weights and a downloaded test image for
`test_application_base`; offline, the serialization part of it is kept and the weights are tested
in test_weights.py):
- 1 and 4 input channels with `(None, None, C)`: output `(None, None, None, 2048)`;
- custom `input_shape` (123 x 123) and custom `input_tensor` (a 2x2/2 conv on 200 x 200 x 4);
- `pooling="max"` -> `(None, 2048)`; `classifier_activation` -> the last layer's activation;
- serialization round trip (same weights count, and here: the same outputs);
- channels_first: Keras' ConvNeXt / DenseNet raise a ValueError naming the data format; so do we.
They run on LambdaResNet50 (the paper family: 101..420 are rows of the same table through the same
builder) and the three timm variants. `lambda_resnet26rpt_256` has relative position embeddings
made for one map size: where Keras expects `(None, None, C)` it raises a ValueError instead.

Size sweep (independent expectation: every stride-2 step maps n to ceil(n / 2), so c2..c5 are
ceil(size / 4, 8, 16, 32)): heights 32, 41, ..., 320 (step 9: all 32 residues mod 32) with other
widths, by symbolic shape inference (`compute_output_spec`) on one dynamic-size model per builder;
blocks.ResidualAdd refuses any broadcast residual during that inference. The deeper paper builders
are swept over `PARITY_SIZES` in test_models_family.py's family test. Real forward passes check the
sizes of the issue (48, 100, 200, 240 px: odd maps before the strided lambda block, where timm's
own model fails) against a NumPy ceil-mode pool and against a static-size build.
"""

import importlib
import inspect
import math
import re

import numpy as np
import keras
import pytest

import lambda_keras
from helpers import activate_residual_branches, assert_close, assert_config_round_trip
from lambda_keras import models
from lambda_keras.blocks import ResidualAdd

LAST_DIM = 2048
KERAS_SEMANTICS = ("LambdaResNet50", "LambdaResNet26T", "LambdaResNet50TS", "LambdaResNet26RPT256")
STATIC_ONLY = ("LambdaResNet26RPT256",)  # relative positions: one map size
SWEEP_HEIGHTS = tuple(range(32, 321, 9))
SWEEP = tuple(zip(SWEEP_HEIGHTS, reversed(SWEEP_HEIGHTS)))  # (h, w): h != w except at 176


def builder(name):
    return getattr(lambda_keras, name)


def ceil_div(n, d):
    return -(-n // d)


# ------------------------------------------------------------ public names, docs, formats
@pytest.mark.parametrize(
    "name", sorted(a.builder for a in lambda_keras.architectures.ARCHITECTURES.values()))
def test_builders_are_named_documented_functions(name):
    fn = builder(name)
    assert inspect.isfunction(fn)
    assert (fn.__name__ == name and fn.__qualname__ == name
            and fn.__module__ == "lambda_keras.models")
    assert fn.__code__.co_name == name  # tracebacks show the builder's name
    for section in ("Args:", "Returns:", "Example:", "include_top", "weights", "pooling"):
        assert section in fn.__doc__, section
    # The signature's default weights are what the name means everywhere (the CLI too).
    default = inspect.signature(fn).parameters["weights"].default
    assert default == lambda_keras.resolve_model(name).default_weights
    # The default input shapes the docstring states are the builder's (without a top too).
    arch = next(a for a in lambda_keras.architectures.ARCHITECTURES.values() if a.builder == name)
    doc = " ".join(fn.__doc__.split())
    top, headless = (lambda_keras.models._input_shape(None, arch, include_top, None)
                     for include_top in (True, False))
    assert f"Defaults to `{top}`" in doc
    assert ("else `(None, None, 3)`" in doc) == (headless == (None, None, 3)), headless
    assert ("at least 32 or `None`" in doc) == (headless == (None, None, 3))


# Public functions and classes beside the builders, read off the package's own `__all__` lists.
PUBLIC_MODULES = ("lambda_keras", "lambda_keras.data", "lambda_keras.export",
                  "lambda_keras.training")
BUILDERS = {a.builder for a in lambda_keras.architectures.ARCHITECTURES.values()}
# Documented helpers outside the `__all__` lists, checked as the public names are.
ALSO_DOCUMENTED = ("lambda_keras.models.resolve_architecture",
                   "lambda_keras.weights.download_preset")


def public_api():
    """{"module.name": function or class} of every function and class the public modules'
    `__all__` lists hold (the builders aside: test_builders_are_named_documented_functions), then
    ALSO_DOCUMENTED; an object exported under several names is listed under its first."""
    found, seen = {}, set()
    names = [(module, name) for module in PUBLIC_MODULES
             for name in importlib.import_module(module).__all__ if name not in BUILDERS]
    names += [tuple(qualified.rsplit(".", 1)) for qualified in ALSO_DOCUMENTED]
    for module, name in names:
        obj = getattr(importlib.import_module(module), name)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in seen:
            seen.add(id(obj))
            found[f"{module}.{name}"] = obj
    return found


PUBLIC_API = public_api()
# The public names whose examples run here as doctests: offline, in seconds, writing at most in a
# temporary directory. The others show theirs in a ```python block (no ">>>": nothing to run).
RUNS_OFFLINE = frozenset({
    "lambda_keras.LambdaLayer", "lambda_keras.SequenceLambdaLayer",
    "lambda_keras.build_lambda_resnet", "lambda_keras.get_model", "lambda_keras.resolve_model",
    "lambda_keras.decode_predictions", "lambda_keras.preprocess_input",
    "lambda_keras.resolve_preprocessing", "lambda_keras.models.resolve_architecture",
    "lambda_keras.data.DatasetInfo", "lambda_keras.data.Preprocessing",
    "lambda_keras.data.RandAugment", "lambda_keras.data.check_spec",
    "lambda_keras.data.eval_transform", "lambda_keras.data.make_randaugment",
    "lambda_keras.data.normalize", "lambda_keras.data.train_transform",
    "lambda_keras.export.calibration_samples", "lambda_keras.export.remove_stale_staging",
    "lambda_keras.export.warmup_requests",
    "lambda_keras.training.MomentumL2", "lambda_keras.training.Recipe",
    "lambda_keras.training.atomic_save", "lambda_keras.training.build_model",
    "lambda_keras.training.describe_recipes", "lambda_keras.training.get_recipe",
    "lambda_keras.training.is_tpu_strategy", "lambda_keras.training.learning_rate_schedule",
    "lambda_keras.training.make_optimizer", "lambda_keras.training.paper_recipe",
    "lambda_keras.training.parse_recipe_overrides", "lambda_keras.training.peak_learning_rate",
    "lambda_keras.training.plot_history", "lambda_keras.training.resolve_jit_compile",
    "lambda_keras.training.resolve_precision", "lambda_keras.training.temp_path",
    "lambda_keras.training.training_data",
})
# No Raises section: nothing of their own to raise (a wrong type fails in Python or Keras).
NO_RAISES = frozenset({
    # Dataclasses that do not check their fields (the transforms check a Preprocessing where it
    # is applied).
    "lambda_keras.data.DatasetInfo", "lambda_keras.data.Preprocessing",
    "lambda_keras.training.TrainResult",
    "lambda_keras.training.NonFiniteError",  # an exception: raised, never raising
    "lambda_keras.training.BatchImages",  # a callback that stores its arguments
    "lambda_keras.training.describe_recipes",  # formats the registered recipes
    "lambda_keras.training.is_tpu_strategy",  # reads the class names of any object
    # Read fields of a Recipe, which checked them when it was made.
    "lambda_keras.training.peak_learning_rate", "lambda_keras.training.learning_rate_schedule",
    "lambda_keras.training.make_optimizer",
})
# No Returns section: functions that return None.
NO_RETURNS = frozenset({"lambda_keras.data.check_spec", "lambda_keras.training.plot_history"})


def signature_arguments(obj):
    """The argument names the Args section of `obj` must list: its (constructor's) parameters in
    order, `*args` / `**kwargs` with their stars; none for exceptions (raised, not made)."""
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return []
    stars = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return [stars.get(p.kind, "") + p.name for p in inspect.signature(obj).parameters.values()]


def documented_arguments(doc):
    """The names of the Args section's entries ("    name: ..." or "    a, b: ..."), in order."""
    names = []
    for line in doc.split("\nArgs:\n", 1)[1].splitlines():
        if line.strip() and not line.startswith(" "):
            break  # the next section
        entry = re.match(r" {4}(\*{0,2}\w+(?:, \*{0,2}\w+)*):", line)
        names += entry[1].split(", ") if entry else []
    return names


def test_public_api_is_listed():
    # The list is derived, not picked: it holds every kind of public name.
    assert {"lambda_keras.LambdaLayer", "lambda_keras.autotune", "lambda_keras.export.tflite",
            "lambda_keras.data.make_dataset", "lambda_keras.training.train"} <= set(PUBLIC_API)
    assert not BUILDERS & {name.rsplit(".", 1)[1] for name in PUBLIC_API}
    for exemptions in (RUNS_OFFLINE, NO_RAISES, NO_RETURNS):
        assert exemptions <= set(PUBLIC_API), exemptions - set(PUBLIC_API)


@pytest.mark.parametrize("name", sorted(PUBLIC_API))
def test_public_api_has_keras_style_docstrings(name):
    """A one-line summary; Args naming exactly the signature's parameters (a class's
    constructor's); Call arguments and Returns for classes whose instances are called; Returns
    for functions, Raises and an Example for all (exemptions above). The examples that run
    offline run as doctests."""
    import doctest

    obj = PUBLIC_API[name]
    # inspect.getdoc: Python 3.13 strips docstrings' indentation when compiling, older ones don't.
    doc = inspect.getdoc(obj)
    assert doc, name
    summary, *rest = doc.splitlines()
    assert summary.endswith(".") and not (rest and rest[0].strip()), doc
    called = inspect.isclass(obj) and ("call" in vars(obj) or "__call__" in vars(obj))
    arguments = signature_arguments(obj)
    required = {"Args": bool(arguments), "Call arguments": called,
                "Returns": called or (inspect.isfunction(obj) and name not in NO_RETURNS),
                "Raises": name not in NO_RAISES, "Example": True}
    for section, needed in required.items():
        if needed:
            assert f"\n{section}:\n" in doc, section
    if arguments:
        assert documented_arguments(doc) == arguments
    else:
        assert "\nArgs:\n" not in doc
    if name in RUNS_OFFLINE:
        finder = doctest.DocTestFinder(recurse=False)
        module_name, short = name.rsplit(".", 1)
        module = importlib.import_module(module_name)
        # As after `from <module> import *` (and np, tf, keras and the public modules).
        exported = getattr(module, "__all__", [n for n in vars(module) if n[0] != "_"])
        globs = {"np": np, "tf": importlib.import_module("tensorflow"), "keras": keras,
                 "lambda_keras": lambda_keras,
                 **{m.rsplit(".", 1)[1]: importlib.import_module(m) for m in PUBLIC_MODULES
                    if "." in m},
                 **{n: getattr(module, n) for n in exported}, obj.__name__: obj}
        # One DocTest per docstring (never an empty list); attempted: it has ">>>" examples.
        (test,) = finder.find(obj, short, globs=globs)
        result = doctest.DocTestRunner(verbose=False).run(test)
        assert result.failed == 0 and result.attempted > 0, name
    else:
        assert ">>>" not in doc and "```python" in doc.split("\nExample:\n", 1)[1], doc


@pytest.mark.parametrize(
    "name", sorted(a.builder for a in lambda_keras.architectures.ARCHITECTURES.values()))
def test_channels_first_is_refused_by_name(name):
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        with pytest.raises(ValueError) as info:
            builder(name)(weights=None, include_top=False, input_shape=(3, 64, 64))
    finally:
        keras.config.set_image_data_format(previous)
    message = str(info.value)
    assert "channels_first" in message and name in message, message


# ------------------------------------------------------------------ Keras' test semantics
@pytest.mark.parametrize("name", KERAS_SEMANTICS)
def test_notop_variable_input_channels(name):
    for channels in (1, 4):
        if name in STATIC_ONLY:
            with pytest.raises(ValueError, match="static input size"):
                builder(name)(weights=None, include_top=False, input_shape=(None, None, channels))
            continue
        model = builder(name)(weights=None, include_top=False, input_shape=(None, None, channels))
        assert list(model.outputs[0].shape) == [None, None, None, LAST_DIM]
        assert model.input_shape == (None, None, None, channels)


@pytest.mark.parametrize("name", KERAS_SEMANTICS)
def test_notop_custom_input_shape(name):
    model = builder(name)(weights=None, include_top=False, input_shape=(123, 123, 3))
    assert list(model.outputs[0].shape) == [None, ceil_div(123, 32), ceil_div(123, 32), LAST_DIM]


@pytest.mark.parametrize("name", KERAS_SEMANTICS)
def test_notop_custom_input_tensor(name):
    inputs = keras.Input(shape=(200, 200, 4), name="custom_input")
    x = keras.layers.Conv2D(3, (2, 2), padding="valid", strides=(2, 2))(inputs)  # [b, 100, 100, 3]
    model = builder(name)(weights=None, include_top=False, input_tensor=x)
    assert list(model.outputs[0].shape) == [None, 4, 4, LAST_DIM]  # ceil(100 / 32)
    assert model.inputs[0] is inputs


@pytest.mark.parametrize("name", KERAS_SEMANTICS)
def test_pooling(name):
    model = builder(name)(weights=None, include_top=False, pooling="max")
    assert list(model.outputs[0].shape) == [None, LAST_DIM]
    assert isinstance(model.layers[-1], keras.layers.GlobalMaxPooling2D)


@pytest.mark.parametrize("name", KERAS_SEMANTICS)
def test_classifier_activation_and_serialization(name):
    model = builder(name)(weights=None, include_top=True, classifier_activation="softmax")
    assert model.layers[-1].activation.__name__ == "softmax"
    size = model.input_shape[1]
    x = np.random.default_rng(0).standard_normal((1, size, size, 3)).astype("float32")
    # Keras' check (same weights count) and ours: the rebuilt model computes the same output.
    clone = assert_config_round_trip(model, x)
    assert len(clone.weights) == len(model.weights)


# ------------------------------------------------------------------------------ size sweep
def test_sweep_hits_every_rounding_case():
    # Every residue mod 32 (the five stride-2 steps' roundings) for heights and for widths.
    assert {h % 32 for h, _ in SWEEP} == set(range(32)) == {w % 32 for _, w in SWEEP}


@pytest.fixture(scope="module", params=["LambdaResNet50", "LambdaResNet101", "LambdaResNet26T",
                                        "LambdaResNet50TS"])
def dynamic_features_model(request):
    return request.param, builder(request.param)(weights=None, include_top=False, features=True)


def test_size_sweep_shapes(dynamic_features_model):
    name, model = dynamic_features_model
    assert model.input_shape == (None, None, None, 3)
    for height, width in SWEEP:
        outputs = model.compute_output_spec(keras.KerasTensor((2, height, width, 3)))
        for level, stride in (("c2", 4), ("c3", 8), ("c4", 16), ("c5", 32)):
            expected = (2, ceil_div(height, stride), ceil_div(width, stride))
            assert tuple(outputs[level].shape[:3]) == expected, (name, height, width, level)


@pytest.mark.parametrize("size", [32, 48, 100, 129])
def test_relative_positions_build_at_every_rounding(size):
    # Static sizes only; 48 and 100 give odd c4 maps (3, 7) before the strided lambda block.
    model = lambda_keras.LambdaResNet26RPT256(weights=None, include_top=False, pooling="avg",
                                              input_shape=(size, size + 3, 3))
    c4 = model.get_layer("stage3_block2_out").output.shape
    assert tuple(c4[1:3]) == (ceil_div(size, 16), ceil_div(size + 3, 16))
    assert tuple(model.get_layer("stage4_block2_out").output.shape[1:3]) == (
        ceil_div(size, 32), ceil_div(size + 3, 32))
    assert model.output_shape == (None, LAST_DIM)


def test_residual_additions_never_broadcast():
    # Keras' Add broadcasts a 1x1 map over a 2x2 one (the bug of a floor-mode strided lambda
    # block at 48 px); ResidualAdd refuses it when built and when called.
    main, shortcut = keras.Input((1, 1, 8)), keras.Input((2, 2, 8))
    assert keras.layers.Add()([main, shortcut]).shape == (None, 2, 2, 8)
    with pytest.raises(ValueError, match=r"would broadcast.*\(None, 1, 1, 8\).*\(None, 2, 2, 8\)"):
        ResidualAdd(name="stage4_block1_add")([main, shortcut])
    with pytest.raises(ValueError, match="would broadcast"):
        ResidualAdd()([np.zeros((1, 1, 1, 8), "float32"), np.zeros((1, 2, 2, 8), "float32")])
    same = ResidualAdd()([np.ones((1, 2, 2, 8), "float32"), np.ones((1, 2, 2, 8), "float32")])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(same), 2.0)


def numpy_ceil_mode_avg_pool(x, size=2):
    """[b, H, W, C] -> [b, ceil(H/2), ceil(W/2), C]: means of the valid pixels of each window
    (PyTorch AvgPool2d(size, 2, ceil_mode=True, count_include_pad=False))."""
    b, h, w, c = x.shape
    out = np.zeros((b, math.ceil(h / 2), math.ceil(w / 2), c), "float64")
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = x[:, 2 * i:2 * i + size, 2 * j:2 * j + size].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("size", [48, 100, 200, 240])
def test_strided_lambda_block_at_sizes_where_timm_fails(size):
    """LambdaResNet26T at the issue's sizes: c4 is odd (3, 7, 13, 15), so the strided lambda block
    of c5 pools in ceil mode, like its shortcut, and the model runs."""
    model = lambda_keras.LambdaResNet26T(weights=None, include_top=False,
                                         input_shape=(size, size, 3))
    probe = keras.Model(model.input, [model.get_layer("stage4_block1_lambda").output,
                                       model.get_layer("stage4_block1_lambda_pool").output,
                                       model.get_layer("stage4_block1_shortcut_bn").output,
                                       model.output])
    x = np.random.default_rng(size).standard_normal((1, size, size, 3)).astype("float32")
    lam, pooled, shortcut, out = (keras.ops.convert_to_numpy(t) for t in probe(x))
    c4 = ceil_div(size, 16)
    assert c4 % 2 == 1 and lam.shape[1:3] == (c4, c4)
    assert pooled.shape[1:3] == shortcut.shape[1:3] == out.shape[1:3] == (ceil_div(c4, 2),) * 2
    np.testing.assert_allclose(pooled, numpy_ceil_mode_avg_pool(lam), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(out))


def strided_lambda_pools(model):
    """{strided lambda block: whether its LambdaLayer pools itself}."""
    return {layer.name: layer.strides == 2 for layer in model.layers
            if isinstance(layer, lambda_keras.layers.LambdaLayer)
            and (layer.strides == 2 or f"{layer.name}_pool" in [m.name for m in model.layers])}


def test_paper_pool_is_inside_the_strided_lambda_layers():
    """The paper's 3x3/2 pool ("same": the valid pixels' mean) is the layer's own strided pool at
    every size, so the layer pools itself (tests/test_layers.py checks that pool against NumPy)."""
    model = lambda_keras.LambdaResNet50(weights=None, include_top=False, layout="CCLL",
                                        input_shape=(None, None, 3))
    assert strided_lambda_pools(model) == {"stage3_block1_lambda": True,
                                           "stage4_block1_lambda": True}


def test_dynamic_size_model_equals_static_builds():
    """A dynamic build pools its strided lambda blocks after the layer (2x2/2 ceil mode); a static
    build on even maps lets the layer pool itself (its "valid" 2x2/2 pool, the position term formed
    at the pooled positions): the same function either way, odd maps included."""
    dynamic = lambda_keras.LambdaResNet26T(weights=None, include_top=False, pooling="avg")
    assert strided_lambda_pools(dynamic) == {"stage4_block1_lambda": False}
    activate_residual_branches(dynamic)  # else every residual branch, lambdas included, is zero
    rng = np.random.default_rng(3)
    # c4 maps 7x5 and 3x5 (odd: pooled after the layer), 4x6 (even: pooled inside it)
    for height, width, inside in ((100, 72, False), (33, 65, False), (64, 96, True)):
        static = lambda_keras.LambdaResNet26T(weights=None, include_top=False, pooling="avg",
                                              input_shape=(height, width, 3))
        assert strided_lambda_pools(static) == {"stage4_block1_lambda": inside}
        static.set_weights(dynamic.get_weights())
        x = rng.standard_normal((2, height, width, 3)).astype("float32")
        expected = keras.ops.convert_to_numpy(dynamic(x))  # features up to O(100)
        assert_close(keras.ops.convert_to_numpy(static(x)), expected, 1e-5, (height, width))
        # Control: the strided lambda layer reaches the output (its value kernel zeroed changes it)
        value_kernel = static.get_layer("stage4_block1_lambda").value_kernel
        value_kernel.assign(np.zeros(value_kernel.shape, "float32"))
        change = np.abs(keras.ops.convert_to_numpy(static(x)) - expected).max()
        assert change > 1e-2 * np.abs(expected).max(), change


@pytest.mark.parametrize("size", [31, 16])
def test_below_the_minimum_size_is_refused(size):
    with pytest.raises(ValueError,
                       match=rf"at least 32x32.*Received: input_shape=\({size}, 64, 3\)"):
        models.LambdaResNet26T(weights=None, include_top=False, input_shape=(size, 64, 3))
