"""The wheel that `pip install lambda-keras` builds: every module of the source tree and the
bundled assets (the ImageNet class names), and no setuptools warning that a data directory
would be left out of it."""

import glob
import os
import subprocess
import sys
import zipfile

from benchmarks.common import REPO_ROOT as ROOT


def test_wheel_holds_every_module_and_the_assets(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "absent from the `packages` configuration" not in process.stderr + process.stdout
    (wheel,) = glob.glob(str(tmp_path / "lambda_keras-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {os.path.relpath(path, ROOT).replace(os.sep, "/")
              for pattern in ("*.py", "assets/*")
              for path in glob.glob(os.path.join(ROOT, "lambda_keras", "**", pattern),
                                    recursive=True)
              if "__pycache__" not in path}
    assert "lambda_keras/assets/imagenet_classes.txt" in source
    assert source <= names, sorted(source - names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
