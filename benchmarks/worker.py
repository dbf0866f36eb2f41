"""Worker process: `python -m benchmarks.worker JOBS.json RESULTS.jsonl`
(started by common.run_groups).

Runs each job of JOBS.json in order with the suite module named by its "suite" field and appends
one JSON line per job to RESULTS.jsonl as soon as it is done, so that a process killed for memory
or time keeps the results it already has. A Python exception in a job is recorded as
status "error" with its message, and the next job runs.
"""

import importlib
import json
import os
import sys
import time
import traceback

from benchmarks.common import setup_torch



def main(argv):
    jobs_path, results_path = argv
    with open(jobs_path, encoding="utf-8") as f:
        jobs = json.load(f)
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    if any(job["suite"] == "peer" or job.get("peer") for job in jobs):
        # PyTorch must be loaded before TensorFlow in one process (the other order segfaults).
        setup_torch(threads)
    for index, job in enumerate(jobs):
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{job['suite']}")  # run.SUITES
            result = {**job, "status": "ok",
                      **module.run_job(job, threads=threads, isolated=index == 0)}
        except Exception as error:  # noqa: BLE001 - recorded, the next job still runs
            result = {**job, "status": "error", "reason": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc()[-3000:]}
        result["job_wall_s"] = time.perf_counter() - started
        with open(results_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
