"""Runs every <name>.onnx in a folder in ONNX Runtime (CPU, one thread) on <name>.obs.bin
(raw rows x cols numbers of the dtype <name>.shape gives) and writes the actions, raw, to
<name>.ort.bin. Used by the ctest entry deploy.onnxruntime (tests/deploy/check_onnxruntime.cmake) and
by deploy_policy --format onnx.
  run_onnxruntime.py FOLDER"""
import glob
import os
import sys

import numpy as np
import onnxruntime as ort


def main(folder):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    models = sorted(glob.glob(os.path.join(folder, "*.onnx")))
    if not models:
        sys.exit(f"run_onnxruntime.py: no .onnx file in {folder}")
    for model in models:
        stem = model[: -len(".onnx")]
        with open(stem + ".shape") as f:
            rows, cols, dtype = f.read().split()
        obs = np.fromfile(stem + ".obs.bin", dtype=np.dtype(dtype)).reshape(int(rows), int(cols))
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        (action,) = session.run(None, {session.get_inputs()[0].name: obs})
        np.ascontiguousarray(action).tofile(stem + ".ort.bin")
        print(f"run_onnxruntime.py: {os.path.basename(model)}: {action.shape} {action.dtype}")
    print(f"run_onnxruntime.py: onnxruntime {ort.__version__}, {len(models)} models")


if __name__ == "__main__":
    main(sys.argv[1])
