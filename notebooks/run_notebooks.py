"""Execute the notebooks top to bottom and keep their outputs (`make notebooks`).

    SMOKE=0 python notebooks/run_notebooks.py --inplace notebooks/*.ipynb
    SMOKE=1 python notebooks/run_notebooks.py --output-dir /tmp/executed notebooks/*.ipynb

Each notebook runs in a fresh kernel, in its own directory (as Jupyter and nbmake run it), with this
process's environment: the notebooks read `SMOKE` (1: shrink epochs and steps for a quick check;
0 or unset: the full run whose outputs are committed). `--inplace` rewrites the notebook with its
new outputs only when every cell succeeded, so a failed run never replaces good committed outputs;
the failing notebook, with the traceback in its outputs, is written next to it as
`NAME.failed.ipynb` (or into `--output-dir`). Cell timing metadata is not recorded (it would make
every commit of the notebooks differ); the total duration and the SMOKE value are kept in the
notebook metadata under "lambda_keras".

CI executes the notebooks with nbmake instead (`SMOKE=1 pytest --nbmake notebooks/*.ipynb`); this
script is for refreshing the committed outputs.
"""

import argparse
import os
import stat
import sys
import tempfile
import time

import nbclient
import nbformat

METADATA_KEY = "lambda_keras"


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", help=".ipynb files to execute")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--inplace", action="store_true",
                       help="write the outputs back into each notebook (only if it succeeded)")
    where.add_argument("--output-dir", help="write the executed notebooks into this directory")
    parser.add_argument("--timeout", type=int, default=1800,
                        help="seconds allowed per cell (default 1800)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if not path.endswith(".ipynb") or not os.path.isfile(path):
            parser.error(f"not a notebook file: {path!r}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive. Received: --timeout={args.timeout}")
    return args


def _file_mode(path):
    """The permissions `path` has, or those a new file gets (mkstemp's are 0600)."""
    if os.path.exists(path):
        return stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write(notebook, path):
    """Write `notebook` to `path` atomically (a temporary file renamed into place)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    mode = _file_mode(path)
    handle, staging = tempfile.mkstemp(prefix=".tmp-", suffix=".ipynb", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            nbformat.write(notebook, f)
        os.chmod(staging, mode)
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise


def _destination(path, args, failed):
    name = os.path.basename(path)
    if failed:
        name = name[: -len(".ipynb")] + ".failed.ipynb"
    directory = args.output_dir or os.path.dirname(os.path.abspath(path))
    return os.path.join(directory, name)


def execute(path, timeout, kernel):
    """Run one notebook in a fresh kernel in its directory -> (notebook, seconds, error or None)."""
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=timeout, kernel_name=kernel, record_timing=False,
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except (nbclient.exceptions.CellExecutionError, nbclient.exceptions.DeadKernelError,
            nbclient.exceptions.CellTimeoutError) as exc:
        error = exc
    seconds = time.perf_counter() - start
    notebook.metadata[METADATA_KEY] = {"smoke": os.environ.get("SMOKE", "0"),
                                       "seconds": round(seconds, 1)}
    return notebook, seconds, error


def main(argv=None):
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    print(f"SMOKE={os.environ.get('SMOKE', '0')}", flush=True)
    failures = []
    for path in args.notebooks:
        print(f"{path}: running ...", flush=True)
        notebook, seconds, error = execute(path, args.timeout, args.kernel)
        destination = _destination(path, args, failed=error is not None)
        _write(notebook, destination)
        if error is None:
            print(f"{path}: ok in {seconds:.0f} s -> {destination}", flush=True)
        else:
            failures.append(path)
            summary = str(error).strip().splitlines()[-1:] or [type(error).__name__]
            print(f"{path}: FAILED after {seconds:.0f} s ({summary[0]}); executed notebook with "
                  f"the traceback: {destination}", flush=True)
    if failures:
        print(f"{len(failures)} of {len(args.notebooks)} notebook(s) failed: {failures}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
