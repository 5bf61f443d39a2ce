"""Times one ONNX model on the Python-hosted peer engines for benches/engines.rs.

Usage: engines.py MODEL INPUT_NPY MIN_RUNS [--min-time S] [--ort-out DIR]

Engines, each single-threaded, after a warm-up, timed run by run with perf_counter_ns until at
least MIN_RUNS runs and --min-time seconds have passed:
  * onnxruntime: 1 intra-op and 1 inter-op thread, ORT_ENABLE_ALL, sequential execution;
  * tract: the optimized plan (``Model.into_runnable`` prepares the model on tract's default
    runtime, which optimizes it), run through one reused state.
Prints one JSON object: per engine the median and minimum latency in ms, the number of runs,
process CPU time over wall time while timing (about 1.0 when single-threaded), the load time
(model file to runnable) in ms, and for tract the max abs error against onnxruntime. With
--ort-out, onnxruntime's outputs are saved there as output_K.npy (the reference for the other
engines). An engine that fails reports {"error": "..."} instead.
"""

import os

# Before any engine is imported: no library may start a thread pool of its own.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

WARMUP = 3


def time_runs(run, min_runs, min_time):
    """Calls ``run`` WARMUP times, then times it until min_runs runs and min_time seconds."""
    for _ in range(WARMUP):
        run()
    times = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    while True:
        a = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - a)
        if len(times) >= min_runs and time.perf_counter() - start >= min_time:
            break
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return {
        "median_ms": statistics.median(times) / 1e6,
        "min_ms": min(times) / 1e6,
        "runs": len(times),
        "cpu_per_wall": cpu / wall if wall > 0 else None,
    }


def max_abs_err(got, want):
    if len(got) != len(want):
        return float("inf")
    err = 0.0
    for g, w in zip(got, want):
        g = np.asarray(g)
        if g.shape != w.shape:
            return float("inf")
        if g.size:
            err = max(err, float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))))
    return err


def bench_ort(model, x, min_runs, min_time):
    import onnxruntime as ort

    t0 = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    feed = {sess.get_inputs()[0].name: x}
    outputs = sess.run(None, feed)
    result = time_runs(lambda: sess.run(None, feed), min_runs, min_time)
    result["load_ms"] = load_ms
    result["version"] = ort.__version__
    return result, outputs


def bench_tract(model, x, min_runs, min_time, want):
    import tract

    t0 = time.perf_counter()
    runnable = tract.onnx().load(str(model)).into_model().into_runnable()
    load_ms = (time.perf_counter() - t0) * 1e3
    state = runnable.spawn_state()
    tx = tract.Tensor.from_numpy(x)
    outputs = [t.to_numpy() for t in state.run([tx])]
    result = time_runs(lambda: state.run([tx]), min_runs, min_time)
    result["load_ms"] = load_ms
    result["version"] = tract.version()
    if want is not None:
        result["max_abs_err"] = max_abs_err(outputs, want)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("input", type=Path)
    ap.add_argument("min_runs", type=int)
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds of timed runs (default 0.5)")
    ap.add_argument("--ort-out", type=Path, help="save onnxruntime's outputs here as output_K.npy")
    args = ap.parse_args(argv)
    x = np.load(args.input)
    report = {}
    want = None
    try:
        report["onnxruntime"], want = bench_ort(args.model, x, args.min_runs, args.min_time)
        if args.ort_out:
            args.ort_out.mkdir(parents=True, exist_ok=True)
            for k, o in enumerate(want):
                np.save(args.ort_out / f"output_{k}.npy", np.ascontiguousarray(o))
    except Exception as e:  # report and carry on with the other engine
        report["onnxruntime"] = {"error": f"{type(e).__name__}: {e}".replace("\n", " ")}
    try:
        report["tract"] = bench_tract(args.model, x, args.min_runs, args.min_time, want)
    except Exception as e:
        report["tract"] = {"error": f"{type(e).__name__}: {e}".replace("\n", " ")}
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
