"""The few helpers shared by the package's modules, one home each.

- Argument validation: `check_int`, `check_size_pair`, `check_number`, `check_bool`,
  `check_choice`. Every message
  names the argument and the received value (`` `key_dim` must be an int >= 1. Received:
  key_dim=0 ``). As in Keras, a value of the wrong type (a float where an int is due, a string)
  raises TypeError, one of the right type out of range ValueError. Booleans are never accepted
  as numbers, nor strings as booleans.
- Native stderr: `native_stderr_silenced`, for C++ log lines that no setting turns off.
- Keras' global dtype policy for a block: `dtype_policy` (builds under a mixed-precision policy);
  the policy a model really computes in: `model_precision` (its layers', not the Model's).
- Atomic files: `temp_path`, `atomic_write`, `atomic_write_bytes`, `write_json`. A file the
  package writes appears under its final name only once it is complete; a failure leaves the
  previous file as it was and removes the half-written one.
- Leftovers of killed writers: `remove_temporaries`, `process_alive` (is a pid's writer alive).

This module imports nothing heavy (no TensorFlow; Keras only inside `dtype_policy` and
`model_precision`).
"""

import contextlib
import json
import numbers
import os
import sys

# Half-written files carry this in their name until `os.replace` renames them.
TEMP_MARK = ".tmp-"


# ------------------------------------------------------------------------- argument checks
def check_int(name, value, *, low=1, high=None, optional=False):
    """`value` as an int in [low, high] (high None: unbounded); None passes when `optional`.

    Raises:
        TypeError: `value` is not an integer (bools and floats are refused).
        ValueError: `value` is out of range.
    """
    if optional and value is None:
        return None
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    kind = f"an int {bounds}" + (" or None" if optional else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    return int(value)


def check_size_pair(name, value, *, optional=False):
    """`value`, an int or a (height, width) pair of ints, all >= 1, as a (height, width) tuple.

    An int n means (n, n); None passes when `optional`.

    Raises:
        TypeError: `value` is neither an int nor a sequence of ints (bools and floats are
            refused).
        ValueError: a sequence of other than two sizes, or a size below 1.
    """
    if optional and value is None:
        return None
    kind = "an int >= 1 or a (height, width) pair of them" + (" or None" if optional else "")
    message = f"`{name}` must be {kind}. Received: {name}={value!r}"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        sizes = (value, value)
    else:
        try:
            sizes = tuple(value)
        except TypeError:
            raise TypeError(message) from None
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in sizes):
        raise TypeError(message)
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(message)
    return tuple(int(s) for s in sizes)


def check_number(name, value, *, low=None, high=None, low_open=False, high_open=False,
                 optional=False):
    """`value` as a finite float within the bounds (None: unbounded; `*_open`: bound excluded).

    Raises:
        TypeError: `value` is not a real number (bools are refused).
        ValueError: `value` is not finite or out of range.
    """
    if optional and value is None:
        return None
    lower = "" if low is None else f"{'>' if low_open else '>='} {low}"
    upper = "" if high is None else f"{'<' if high_open else '<='} {high}"
    bounds = " and ".join(part for part in (lower, upper) if part)
    kind = "a finite number" + (f" {bounds}" if bounds else "") + (" or None" if optional else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    received, value = value, float(value)
    bad = value != value or value in (float("inf"), float("-inf"))
    if low is not None:
        bad = bad or value < low or (low_open and value == low)
    if high is not None:
        bad = bad or value > high or (high_open and value == high)
    if bad:
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={received!r}")
    return value


def check_bool(name, value, *, optional=False):
    """`value` must be a real bool (not 0/1, not "false"); None passes when `optional`."""
    if optional and value is None:
        return None
    if not isinstance(value, bool):
        kind = "a bool or None" if optional else "a bool"
        raise TypeError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    return value


def check_choice(name, value, choices):
    """`value` must be one of `choices`, of the same type (True is not accepted for 1)."""
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        raise ValueError(f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}")
    return value


def caller_stacklevel():
    """`stacklevel` for `warnings.warn`, called in the function that warns: the first frame
    outside this package, so a warning names the user's line however deep the package's own
    calls run (Python 3.12's `skip_file_prefixes`, for every supported Python)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1  # level 1: the function that warns
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


# ---------------------------------------------------------------------------- atomic files
def check_not_under_a_file(name, path):
    """ValueError if an existing part of `path` (str) above it is a file, not a directory: the
    directories to create there could not be (was the OS's NotADirectoryError)."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"`{name}` lies under {parent!r}, an existing file, not a directory. "
                         f"Received: {name}={path!r}")


def temp_path(path):
    """A sibling of `path` for writing before `os.replace`.

    It keeps the full suffix (Keras checks `.weights.h5`, `.keras`) and carries `TEMP_MARK` and the
    process id, so concurrent writers never share one and leftovers are recognisable.

    Args:
        path: the final file name (a str or os.PathLike).

    Returns:
        The temporary path, a str: "<stem><TEMP_MARK><pid>.<suffixes>" in the same directory.

    Raises:
        TypeError: `path` is not a str or os.PathLike.

    Example:

    >>> import os
    >>> name = temp_path("out/model.weights.h5")
    >>> name == f"out/model{TEMP_MARK}{os.getpid()}.weights.h5"
    True
    """
    directory, name = os.path.split(os.fspath(path))
    stem, dot, rest = name.partition(".")
    return os.path.join(directory, f"{stem}{TEMP_MARK}{os.getpid()}{dot}{rest}")


@contextlib.contextmanager
def created_directory(directory):
    """Creates `directory` and its missing parents for a `with` block; if the block raises,
    removes those it created while they are empty, deepest first (never one that existed
    before), so that a failed write leaves the filesystem as it found it."""
    created, missing = [], os.path.abspath(os.fspath(directory))
    while not os.path.isdir(missing):
        created.append(missing)
        missing = os.path.dirname(missing)
    try:
        os.makedirs(directory, exist_ok=True)
        yield
    except BaseException:
        for path in created:
            try:
                os.rmdir(path)
            except OSError:  # missing, or not empty (another writer used it meanwhile)
                break
        raise


def atomic_write(path, write):
    """Calls `write(temporary_path)`, then renames the result onto `path`.

    `path` is never half-written: if `write` raises, the temporary file is removed and `path` keeps
    its previous content. The parent directory is created if missing (and removed again, with
    any parent created for it, if `write` raises: `created_directory`). Exported as
    `lambda_keras.training.atomic_save`.

    Args:
        path: the final file name.
        write: a function that writes the whole file to the path it is given; it may write nothing
            (a checkpoint callback that decides not to save).

    Returns:
        Whether `write` wrote a file (and `path` was replaced).

    Raises:
        Exception: whatever `write` raises, after the temporary file was removed.
        TypeError: `path` is not a str or os.PathLike.
        OSError: the parent directory cannot be created, or the file cannot be renamed onto
            `path` (e.g. a directory).

    Example:

    >>> import os, shutil, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "out", "notes.txt")
    >>> def write(temporary):
    ...     with open(temporary, "w") as f:
    ...         f.write("all or nothing")
    >>> atomic_write(path, write), open(path).read()
    (True, 'all or nothing')
    >>> shutil.rmtree(os.path.dirname(os.path.dirname(path)))
    """
    path = os.fspath(path)
    temporary = temp_path(path)
    with created_directory(os.path.dirname(os.path.abspath(path))):
        try:
            write(temporary)
            if not os.path.exists(temporary):
                return False
            os.replace(temporary, path)
            return True
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)


def atomic_write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically (see `atomic_write`)."""

    def write(target):
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def write_json(path, obj):
    """Writes `obj` as indented JSON (one trailing newline) to `path` atomically (see
    `atomic_write`)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def remove_temporaries(directory, name=None):
    """Removes the leftovers of writes a kill interrupted in `directory`: files of `temp_path`'s
    form whose writer (the pid in their name) no longer runs; with `name`, only those of that
    file. Such files are never read (their names say they are incomplete); a live writer's file
    is kept, so two processes writing in one directory never remove each other's. A missing
    directory is fine.

    Args:
        directory: the folder to clean.
        name: optional final file name (e.g. "weights.safetensors"): only its leftovers.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return
    stem = None if name is None else name.partition(".")[0] + TEMP_MARK
    for leftover in os.listdir(directory):
        if TEMP_MARK not in leftover or (stem is not None and not leftover.startswith(stem)):
            continue
        pid = leftover.partition(TEMP_MARK)[2].partition(".")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            try:
                os.remove(os.path.join(directory, leftover))
            except OSError:  # removed meanwhile by another process
                pass


def process_alive(pid):
    """Whether process `pid` runs on this host, for leftovers named by their writer's pid.

    A live process of another user counts (its files are not ours to remove); so does any other
    refusal of the probe: when in doubt, a leftover is kept.
    """
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no pid is that large
        return False
    except OSError:  # PermissionError: exists, owned by someone else
        return True
    return True


# --------------------------------------------------------------------------- native stderr
@contextlib.contextmanager
def native_stderr_silenced():
    """Points file descriptor 2 at /dev/null inside the block: silences what C/C++ code writes
    there (TensorFlow's import-time absl lines, LiteRT's "Created TensorFlow Lite XNNPACK
    delegate"). Python's `sys.stderr` is flushed first and writes normally again afterwards;
    an exception raised inside the block still propagates (and prints) as usual."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


# ------------------------------------------------------------------------------ dtype policy
@contextlib.contextmanager
def dtype_policy(name):
    """Keras' global dtype policy set to `name` (e.g. "mixed_bfloat16") inside the block, the
    previous one restored after, also when the block raises. Layers built inside keep it."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def model_precision(model):
    """The dtype policy `model` computes in, read off its layers (not `model.dtype_policy`).

    A model loaded from a `.keras` file inside `dtype_policy(...)` reports that policy on the
    Model object while its layers keep the policies they were saved with; the layers are what
    runs. A float32 layer that makes the model's output (the classifier, directly or through
    weightless layers such as a softmax) is the deliberate full-precision end of a mixed-precision
    model, as Keras' mixed-precision guide advises, and does not count.

    Returns:
        The policy name ("float32", "mixed_bfloat16", ...) of the layers that hold weights
        (nested models looked into), or their names joined by "+" where they differ. A model
        without weights: its own policy.
    """
    import keras

    layers = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
              if layer.weights and not isinstance(layer, keras.Model)]
    names = {layer.dtype_policy.name for layer in layers}
    heads = _output_layers(model)
    body = {layer.dtype_policy.name for layer in layers if id(layer) not in heads}
    if len(names) > 1 and body and "float32" not in body:
        names.discard("float32")  # only the float32 head differs
    return "+".join(sorted(names)) if names else model.dtype_policy.name


def _output_layers(model):
    """ids of the layers of a functional `model` that make its outputs: the last weighted layer
    on each output's path and the weightless ones after it (layers, or `keras.ops` calls in the
    graph, which are operations without weights)."""
    found, tensors = set(), list(getattr(model, "outputs", None) or [])
    while tensors:
        history = getattr(tensors.pop(), "_keras_history", None)
        if history is None or id(history[0]) in found:
            continue
        layer = history[0]
        found.add(id(layer))
        if not getattr(layer, "weights", None):  # an activation, a reshape: look further back
            tensors.extend(layer._inbound_nodes[history[1]].input_tensors)
    return found
