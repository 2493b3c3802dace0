"""Evaluates a train_dir's checkpoints on validation shards: Hit@1, PERR, GAP, mAP, loss.

One full deterministic pass per checkpoint (every video exactly once). The graph is rebuilt from
train_dir/model_flags.json, so a student is evaluated on the same k frames it was trained on and a KD
run is evaluated as its plain student. Results go to TensorBoard (<train_dir>/eval) and to JSON
(<train_dir>/eval/metrics.json, the latest, and metrics-STEP.json, one per evaluated checkpoint), with
the frames read per video (mean, median, histogram) and the multiply-adds spent. An any-k run
(--k_frame_choices) evaluated at another --k_frame writes to <train_dir>/eval_k<K>; early exit
(--exit_rule, --exit_threshold, --exit_stages: early_exit.py) to <train_dir>/eval_exit_<rule>_<threshold>_<stages>.
--run_once evaluates the newest intact checkpoint (a damaged newer one is passed over with a warning;
a damaged --checkpoint_file is refused); otherwise each new checkpoint is evaluated once as it
appears, a damaged one skipped with a warning, until none has appeared for --max_wait_secs.
"""

import glob
import os
import re
import sys
import time

import tensorflow.compat.v1 as tf

import checkpoints
import config
import early_exit
import eval_util
import model_utils
import precision
import readers
import utils

flags = tf.flags

# The model flags (config.py) are accepted as the starter's scripts pass them, checked against the run.
flags.DEFINE_string("eval_data_pattern", "", "Glob(s) of validation shards.")
flags.DEFINE_bool("run_once", False, "Evaluate one checkpoint (--checkpoint_file or the latest) and exit.")
flags.DEFINE_integer("eval_interval_secs", 30, "Seconds between looks for a new checkpoint.", lower_bound=0)
flags.DEFINE_integer("max_wait_secs", 600, "Watch mode stops after this long without a new checkpoint.",
                     lower_bound=0)
flags.DEFINE_integer("log_every_batches", 20, "Progress line every this many batches.", lower_bound=1)
METRICS_EXPECTED = "the metrics eval.py writes"   # what eval/metrics*.json holds, for utils.read_json


class Evaluator(object):
  """The evaluation graph of one train_dir, reusable for every checkpoint of that run."""

  def __init__(self, train_dir, data_pattern, batch_size=1024, top_k=20, num_readers=4,
               log_every_batches=20, model_flags=None, staged=None, mixed_precision="none"):
    """`model_flags` (default: the run's) and `staged` (an early_exit.Staged: early exit) choose what
    is evaluated; results go to train_dir/<early_exit.eval_folder>. `mixed_precision`: a resolved
    precision (precision.resolve)."""
    self.train_dir = train_dir
    recorded = config.load_model_flags(train_dir)
    self.model_flags = model_flags or recorded
    self.eval_dir = os.path.join(train_dir, early_exit.eval_folder(recorded, self.model_flags, staged))
    self.files = readers.resolve_files(data_pattern, "--eval_data_pattern")
    self.top_k = top_k
    self.log_every_batches = log_every_batches
    self.mixed_precision = mixed_precision   # a resolved precision (precision.resolve)
    self.graph = tf.Graph()
    with self.graph.as_default():
      parts = model_utils.build_evaluation_graph(self.model_flags, self.files, batch_size, num_readers,
                                                 staged)
      predictions, labels = parts["outputs"]["predictions"], parts["batch"]["labels"]
      loss = model_utils.label_loss(self.model_flags).calculate_loss(predictions, labels)
      self.fetch = {"predictions": predictions, "labels": labels, "loss": loss,
                    "video_ids": parts["batch"]["video_ids"], "num_frames": parts["batch"]["num_frames"],
                    "frames_read": parts["outputs"]["frames_read"], "macs": parts["outputs"]["macs"]}
      self.frame_bins = parts["frame_bins"]
      self.iterator_init, self.saver, self.reader = parts["iterator_init"], parts["saver"], parts["reader"]
      self.global_step = parts["global_step"]
      self.needed = parts["restored"]  # the checkpoint tensors a restore reads
    self.graph.finalize()
    self.sess = tf.Session(graph=self.graph, config=precision.session_config(mixed_precision))

  def evaluate(self, checkpoint):
    """Restores `checkpoint`, runs one pass, returns the metrics dict."""
    self.saver.restore(self.sess, checkpoint)
    step = int(self.sess.run(self.global_step))
    self.sess.run(self.iterator_init)
    metrics = eval_util.EvaluationMetrics(self.model_flags["num_classes"], self.top_k)
    frames = early_exit.FrameCount(self.frame_bins)
    start, batches, videos, empty = time.time(), 0, 0, 0
    for values in readers.read_batches(self.sess, self.fetch, self.files, self.reader):
      model_utils.check_finite_predictions(values["predictions"], values["video_ids"], checkpoint)
      metrics.accumulate(values["predictions"], values["labels"], values["loss"])
      frames.add(values["frames_read"], values["macs"])
      batches += 1
      videos += len(values["labels"])
      empty += int((values["num_frames"] == 0).sum())
      if batches % self.log_every_batches == 0:
        tf.logging.info("step %d: %d videos evaluated, %.0f videos/sec", step, videos,
                        videos / (time.time() - start))
    result = metrics.get()
    seconds = time.time() - start
    summary = {"global_step": step, "num_videos": int(result["num_examples"]),
               "gap": float(result["gap"]), "map": float(result["map"]),
               "hit_at_one": float(result["avg_hit_at_one"]), "perr": float(result["avg_perr"]),
               "loss": float(result["avg_loss"]), "checkpoint": checkpoint,
               "videos_per_sec": videos / max(seconds, 1e-9), "videos_without_frames": empty,
               "mixed_precision": self.mixed_precision}
    summary.update(frames.summary())
    if empty:
      tf.logging.warning("%d of the %d videos have 0 frames: evaluated on the model's output for an "
                         "input without frames.", empty, videos)
    tf.logging.info("step %d | %d videos | GAP %.4f | mAP %.4f | Hit@1 %.4f | PERR %.4f | loss %.4f | "
                    "%.0f videos/sec | %s", step, summary["num_videos"], summary["gap"], summary["map"],
                    summary["hit_at_one"], summary["perr"], summary["loss"], summary["videos_per_sec"],
                    early_exit.describe(summary))
    self._write(summary)
    return summary

  def _write(self, summary):
    eval_dir = self.eval_dir
    tf.io.gfile.makedirs(eval_dir)
    writer = tf.summary.FileWriterCache.get(eval_dir)
    for tag, key in (("GAP", "gap"), ("mAP", "map"), ("Hit@1", "hit_at_one"), ("PERR", "perr"),
                     ("loss", "loss")):
      writer.add_summary(utils.scalar_summary("eval/" + tag, summary[key]), summary["global_step"])
    writer.flush()
    for name in ("metrics-%d.json" % summary["global_step"], "metrics.json"):
      utils.write_json_atomic(os.path.join(eval_dir, name), summary)


def evaluated_steps(train_dir, eval_folder="eval"):
  return {int(m.group(1)) for m in (re.search(r"metrics-(\d+)\.json$", p) for p in
                                     glob.glob(os.path.join(train_dir, eval_folder, "metrics-*.json"))) if m}


def checkpoint_step(path):
  return int(path.rsplit("-", 1)[1])


def _identity(path):
  """A checkpoint as the watch knows it: its path and its index's modification time (a checkpoint
  written later under a skipped one's name, by a resumed run, is another one); None once deleted."""
  try:
    return path, tf.io.gfile.stat(path + ".index").mtime_nsec
  except tf.errors.NotFoundError:
    return None


def pending(train_dir, skipped=frozenset(), eval_folder="eval"):
  """The checkpoints train_dir's index lists (oldest first) that exist, have no
  <eval_folder>/metrics-STEP.json yet and are not in `skipped` (identities)."""
  done = evaluated_steps(train_dir, eval_folder)
  paths = []
  for path in checkpoints.listed(train_dir):
    identity = _identity(path)
    if identity is not None and identity not in skipped and checkpoint_step(path) not in done:
      paths.append(path)
  return paths


def evaluate_each(evaluator, paths, skipped):
  """Evaluates each checkpoint of `paths` in turn; returns their metrics. A damaged one is skipped
  with a one-line warning and its identity added to `skipped`, so that it is not retried; one deleted
  before its turn (training keeps the last --keep_checkpoint_max) is skipped too."""
  results = []
  for path in paths:
    reason = checkpoints.damage(path, evaluator.needed)
    if reason is None:
      try:
        results.append(evaluator.evaluate(path))
        continue
      except (tf.errors.NotFoundError, ValueError):
        if tf.io.gfile.exists(path + ".index"):
          raise
    identity = _identity(path)
    if identity is None:
      tf.logging.warning("%s was deleted before it could be evaluated: skipped.", path)
    else:
      tf.logging.warning("%s is damaged (%s): skipped, and not retried.", path, reason)
      skipped.add(identity)
  return results


def run(opts):
  """Evaluates once (--run_once / --checkpoint_file: checkpoints.choose) or watches the train_dir for
  new checkpoints; returns the list of metrics dicts."""
  model_flags = config.run_model_flags(opts.train_dir, opts)
  evaluator = Evaluator(opts.train_dir, opts.eval_data_pattern, opts.batch_size, opts.top_k,
                        opts.num_readers, opts.log_every_batches, model_flags,
                        early_exit.staged_from_flags(model_flags, opts, opts.train_dir),
                        precision.resolve(opts.mixed_precision))
  if opts.checkpoint_file or opts.run_once:
    checkpoint = checkpoints.choose(opts.checkpoint_file or opts.train_dir,
                                    "--checkpoint_file" if opts.checkpoint_file else "--train_dir",
                                    needed=evaluator.needed)
    return [evaluator.evaluate(checkpoint)]
  results, last_new, skipped = [], time.time(), set()
  while time.time() - last_new < opts.max_wait_secs:
    paths = pending(opts.train_dir, skipped, os.path.basename(evaluator.eval_dir))
    if paths:
      results += evaluate_each(evaluator, paths, skipped)
      last_new = time.time()
    else:
      tf.logging.info("No new checkpoint in %s; waiting (stops after %ds without one).",
                      opts.train_dir, opts.max_wait_secs)
      time.sleep(min(opts.eval_interval_secs, max(0, opts.max_wait_secs - (time.time() - last_new))))
  tf.logging.info("No new checkpoint for %ds: evaluation stops.", opts.max_wait_secs)
  return results


main = utils.flag_program(run)

if __name__ == "__main__":
  utils.run_cli(main, sys.argv)
