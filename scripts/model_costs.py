"""Cost of a model per video: trainable parameters (from its graph), multiply-adds for one video of F
frames (model_utils.macs: counted from the model's definition, the matrix products of its layers,
recurrences and aggregations) and measured milliseconds per video at inference on this machine
(batches of decoded frames; input reading excluded).

The multiply-adds are not TensorFlow's profiler count: it takes a batched matmul's inner dimension from
`transpose_a`, which BatchMatMulV2 does not have (it has `adj_x`), so it under-counts NeXtVLAD's and
NetVLAD's aggregation, and it counts a tf.while_loop's body (every LSTM) once.

  python scripts/model_costs.py --train_dir=out/study/runs/teacher_seed0 [--frames=30]
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

import config  # noqa: E402
import model_utils  # noqa: E402
import utils  # noqa: E402


def _graph(model_flags, batch, frames):
  graph = tf.Graph()
  with graph.as_default():
    dims = sum(model_flags["feature_sizes"])
    shape = [batch, frames, dims] if model_flags["frame_features"] else [batch, dims]
    inputs = tf.placeholder(tf.float32, shape, name="frames")
    num_frames = tf.fill([batch], frames)
    outputs = model_utils.build_model(model_flags, inputs, num_frames, is_training=False)
  return graph, inputs, outputs


def count(model_flags, frames=None):
  """(trainable parameters, multiply-adds per video) of a model reading `frames` frames (None: all)."""
  graph, _, _ = _graph(model_flags, 1, frames or model_flags["max_frames"])
  with graph.as_default():
    parameters = int(sum(np.prod(v.shape.as_list()) for v in tf.trainable_variables()))
  return parameters, model_utils.macs(model_flags, frames)


def measure(model_flags, frames=None, batch=32, repeats=5, rounds_of_repeats=5):
  """Dict with `parameters`, `macs` (per video) and `ms_per_video` (best of `rounds_of_repeats`
  rounds of `repeats` batches) for a model reading `frames` frames (None: all, max_frames)."""
  frames = frames or model_flags["max_frames"]
  parameters, macs = count(model_flags, frames)
  graph, inputs, outputs = _graph(model_flags, batch, frames)
  with tf.Session(graph=graph) as sess:
    with graph.as_default():
      sess.run(tf.global_variables_initializer())
    data = np.random.RandomState(0).randn(*inputs.shape.as_list()).astype(np.float32)
    sess.run(outputs["predictions"], {inputs: data})  # warm-up
    rounds = []  # the fastest of several rounds: other jobs on a shared machine only add time
    for _ in range(rounds_of_repeats):
      started = time.perf_counter()
      for _ in range(repeats):
        sess.run(outputs["predictions"], {inputs: data})
      rounds.append(time.perf_counter() - started)
    seconds = min(rounds)
  return {"parameters": parameters, "macs": macs,
          "ms_per_video": 1000.0 * seconds / (repeats * batch)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--train_dir", required=True)
  parser.add_argument("--frames", type=int, default=None, help="Frames per video (default: the run's).")
  args = parser.parse_args(argv)
  tf.disable_v2_behavior()
  model_flags = config.load_model_flags(args.train_dir)
  print(json.dumps(measure(model_flags, args.frames or config.frames_read(model_flags)), indent=2))


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
