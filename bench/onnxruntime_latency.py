"""Per-action latency of rlobj's exported ONNX policies in ONNX Runtime (CPU, one thread), one
observation per call, through onnxruntime's Python binding (its per-call overhead included).
  onnxruntime_latency.py FOLDER   # the policy_<cells>.onnx files bench/deploy_bench.cpp wrote
Prints the median of 10 repetitions of timed loops, in microseconds per call."""
import glob
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort


def main(folder):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    models = sorted(glob.glob(os.path.join(folder, "policy_*.onnx")))
    if not models:
        sys.exit(f"onnxruntime_latency.py: no policy_*.onnx in {folder}")
    for model in models:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.array([[0.3, -0.9, 0.5]], dtype=np.float32)}
        for _ in range(1000):
            session.run(None, feed)
        reps = []
        for _ in range(10):
            n = 5000
            t0 = time.perf_counter()
            for _ in range(n):
                session.run(None, feed)
            reps.append((time.perf_counter() - t0) / n * 1e6)
        print(f"PolicyAct_onnxruntime/{os.path.basename(model)[:-5]}: median {statistics.median(reps):.2f} us per call "
              f"(onnxruntime {ort.__version__}, Python binding)")


if __name__ == "__main__":
    main(sys.argv[1])
