"""Image folders as a source: `folder:PATH` specs.

Class sub-folders of images (.jpg, .jpeg, .png, .gif, .bmp; .webp where TensorFlow reads it), like
`keras.utils.image_dataset_from_directory`. If PATH has split folders (`train/`, `val/` or
`validation/`, `test/`), each holding class folders, `split` picks one; otherwise PATH holds the
class folders and a fixed stratified 80/20 hold-out gives "train" and "validation"/"test" ("all"
reads everything).

Every file is checked before training starts, and a problem names its path: non-image files,
files whose header is not an image, unreadable files, truncated files (a PNG without its IEND
chunk, a JPEG without its end marker, a GIF without its trailer, a BMP or WebP shorter than its
header says; such a file is decoded to confirm) and empty class folders. `verify_images=True`
decodes every image up front instead (slow; it also finds damage inside a complete file).
"""

import concurrent.futures
import os
import re

import numpy as np
import tensorflow as tf

from lambda_keras.data.sources import Source, holdout_indices

# NOTE: tf.io.decode_image reads WebP from the TensorFlow that has tf.io.decode_webp on (not
# 2.18, the lowest supported; 2.21 does): WebP files count as images only there.
WEBP = hasattr(tf.io, "decode_webp")
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png") + ((".webp",) if WEBP else ())
# File signatures of the formats tf.io.decode_image reads: (pattern of the leading bytes, format).
IMAGE_SIGNATURES = (
    (re.compile(b"\xff\xd8\xff"), "JPEG"),
    (re.compile(b"\x89PNG\r\n\x1a\n"), "PNG"),
    (re.compile(b"GIF8[79]a"), "GIF"),
    (re.compile(b"BM"), "BMP"),
) + (((re.compile(b"RIFF.{4}WEBP", re.DOTALL), "WebP"),) if WEBP else ())  # RIFF, size, WEBP
IMAGE_FORMATS = ", ".join(sorted({name for _, name in IMAGE_SIGNATURES}))  # for messages
_HEAD_BYTES = 12
# Split folders of a `folder:` dataset, by logical split, in order of preference.
FOLDER_SPLIT_DIRS = {
    "train": ("train",),
    "validation": ("validation", "val"),
    "val": ("val", "validation"),
    "test": ("test",),
}
_MAX_LISTED_PATHS = 10
_TAIL_BYTES = 64  # the end of a complete PNG/JPEG/GIF lies in its last bytes


def _list_paths(paths):
    shown = ", ".join(paths[:_MAX_LISTED_PATHS])
    more = len(paths) - _MAX_LISTED_PATHS
    return shown + (f" and {more} more" if more > 0 else "")


def _subfolders(path):
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _class_files(class_dir):
    """All non-hidden files under `class_dir` (recursive, sorted).

    A folder reached twice (a symlink loop, or a second link to one folder: its files would be
    read again and again) raises ValueError naming the link.
    """
    files = []
    visited = {os.path.realpath(class_dir)}
    for root, dirs, names in os.walk(class_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            real = os.path.realpath(os.path.join(root, d))
            if real in visited:
                raise ValueError(
                    f"{os.path.join(root, d)} leads to {real}, a folder already read (a symlink "
                    "loop or a second link to one folder): remove the link from the image folder")
            visited.add(real)
        files.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
    return files


def _looks_complete(head, tail, size):
    """Whether a file with these first/last bytes and size ends where its format ends."""
    if head.startswith(b"\x89PNG"):
        return b"IEND" in tail  # the last chunk: length, "IEND", CRC
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" in tail  # end-of-image marker (trailing bytes after it are rare)
    if head.startswith(b"GIF"):
        return b";" in tail  # the trailer byte 0x3B
    if head.startswith(b"BM") and len(head) >= 6:
        return size >= int.from_bytes(head[2:6], "little")  # the size the header declares
    if head.startswith(b"RIFF"):
        return size >= 8 + int.from_bytes(head[4:8], "little")  # RIFF's header + its chunk
    return True


def _header_problem(path):
    """None if `path` starts like an image tf.io.decode_image reads and is not cut short, else
    why not. A file whose end looks cut short is decoded to confirm (`_decode_problem`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
            size = os.fstat(f.fileno()).st_size
            f.seek(max(size - _TAIL_BYTES, 0))
            tail = f.read()
    except OSError as error:
        return f"{path} (unreadable: {error.strerror})"
    if not any(signature.match(head) for signature, _ in IMAGE_SIGNATURES):
        return f"{path} (not a {IMAGE_FORMATS} image)"
    if not _looks_complete(head, tail, size):
        problem = _decode_problem(path)
        return problem and problem.replace("(cannot be decoded:", "(truncated; cannot be decoded:")
    return None


def _decode_problem(path):
    """None if tf.io.decode_image decodes `path`, else why not."""
    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        return f"{path} (cannot be decoded: {error.message.splitlines()[0]})"
    return None


def _check_images(paths, check, folder):
    workers = min(32, 4 * (os.cpu_count() or 1))  # I/O bound
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        problems = [p for p in pool.map(check, paths) if p is not None]
    if problems:
        raise ValueError(
            f"{len(problems)} unreadable image file(s) in the image folder {folder}: "
            f"{_list_paths(problems)}. Fix or remove them."
        )


def _scan_class_folders(folder, verify_images):
    """Class folders under `folder` -> (class_names, paths, labels), every file checked."""
    class_names = tuple(_subfolders(folder))
    if not class_names:
        raise ValueError(
            f"The image folder {folder} has no class sub-folders (folder/CLASS/image.jpg)."
        )
    paths, labels, others = [], [], []
    for label, name in enumerate(class_names):
        files = _class_files(os.path.join(folder, name))
        images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        others.extend(f for f in files if not f.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            raise ValueError(
                f"The class folder {os.path.join(folder, name)} is empty: it has no image files "
                f"{IMAGE_EXTENSIONS}. Add images or remove the folder."
            )
        paths.extend(images)
        labels.extend([label] * len(images))
    if others:
        raise ValueError(
            f"{len(others)} file(s) that are not images {IMAGE_EXTENSIONS} in the image folder "
            f"{folder}: {_list_paths(others)}. Move them out of the class folders."
        )
    _check_images(paths, _decode_problem if verify_images else _header_problem, folder)
    return class_names, np.array(paths), np.array(labels, np.int32)


def _folder_split_dir(root, split):
    """For a root with split folders, the folder of `split` (None when the root has none)."""
    names = ("train", "validation", "val", "test")
    present = [d for d in names if os.path.isdir(os.path.join(root, d))]
    if not present:
        return None
    for name in FOLDER_SPLIT_DIRS.get(split, ()):
        if name in present:
            return os.path.join(root, name)
    raise ValueError(
        f"`split` has no split folder in {root} (found {', '.join(present)}; "
        f"'train', 'validation'/'val' and 'test' are recognised). Received: split={split!r}"
    )


def check_folder_root(argument, arg="spec"):
    """The folder of a 'folder:PATH' spec (`argument` is PATH), which must be a directory;
    `arg` is the argument the message names."""
    root = os.path.expanduser(argument)
    if not os.path.isdir(root):
        raise ValueError(
            f"`{arg}` names a folder that does not exist: {root}. "
            f"Received: {arg}='folder:{argument}'"
        )
    return root


def folder_source(argument, split, *, data_dir, training, seed, verify_images):
    root = check_folder_root(argument)
    split_dir = _folder_split_dir(root, split)
    if split_dir is not None:
        class_names, paths, labels = _scan_class_folders(split_dir, verify_images)
        train_dir = os.path.join(root, "train")
        train_classes = tuple(_subfolders(train_dir)) if os.path.isdir(train_dir) else class_names
        if train_classes != class_names:
            raise ValueError(
                f"The class folders of {split_dir} differ from those of {train_dir}: "
                f"{list(class_names)} vs {list(train_classes)}."
            )
    else:
        class_names, paths, labels = _scan_class_folders(root, verify_images)
        indices = holdout_indices(labels, split, f"spec='folder:{argument}'", class_names)
        paths, labels = paths[indices], labels[indices]

    def decode(path):
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    return Source(
        examples=tf.data.Dataset.from_tensor_slices((paths, labels)),
        decode=decode,
        split=split,
        class_names=class_names,
        num_examples=len(labels),
        shuffle_buffer=len(labels),
    )

