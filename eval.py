"""Evaluates a train_dir's checkpoints on validation shards: Hit@1, PERR, GAP, mAP, loss.

One full deterministic pass per checkpoint (every video exactly once). The graph is rebuilt from
train_dir/model_flags.json, so a student is evaluated on the same k frames it was trained on and a KD
run is evaluated as its plain student. Results go to TensorBoard (<train_dir>/eval) and to JSON
(<train_dir>/eval/metrics.json, the latest, and metrics-STEP.json, one per evaluated checkpoint).
--run_once evaluates the latest checkpoint; otherwise each new checkpoint is evaluated once as it
appears, until none has appeared for --max_wait_secs.
"""

import glob
import os
import re
import sys
import time

import tensorflow.compat.v1 as tf

import config
import eval_util
import model_utils
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


class Evaluator(object):
  """The evaluation graph of one train_dir, reusable for every checkpoint of that run."""

  def __init__(self, train_dir, data_pattern, batch_size=1024, top_k=20, num_readers=4,
               log_every_batches=20):
    self.train_dir = train_dir
    self.model_flags = config.load_model_flags(train_dir)
    self.files = readers.resolve_files(data_pattern, "--eval_data_pattern")
    self.top_k = top_k
    self.log_every_batches = log_every_batches
    self.graph = tf.Graph()
    with self.graph.as_default():
      parts = model_utils.build_evaluation_graph(self.model_flags, self.files, batch_size, num_readers)
      predictions, labels = parts["outputs"]["predictions"], parts["batch"]["labels"]
      loss = model_utils.label_loss(self.model_flags).calculate_loss(predictions, labels)
      self.fetch = {"predictions": predictions, "labels": labels, "loss": loss,
                    "video_ids": parts["batch"]["video_ids"], "num_frames": parts["batch"]["num_frames"]}
      self.iterator_init, self.saver, self.reader = parts["iterator_init"], parts["saver"], parts["reader"]
      self.global_step = parts["global_step"]
    self.graph.finalize()
    self.sess = tf.Session(graph=self.graph)

  def evaluate(self, checkpoint):
    """Restores `checkpoint`, runs one pass, returns the metrics dict."""
    self.saver.restore(self.sess, checkpoint)
    step = int(self.sess.run(self.global_step))
    self.sess.run(self.iterator_init)
    metrics = eval_util.EvaluationMetrics(self.model_flags["num_classes"], self.top_k)
    start, batches, videos, empty = time.time(), 0, 0, 0
    for values in readers.read_batches(self.sess, self.fetch, self.files, self.reader):
      model_utils.check_finite_predictions(values["predictions"], values["video_ids"], checkpoint)
      metrics.accumulate(values["predictions"], values["labels"], values["loss"])
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
               "videos_per_sec": videos / max(seconds, 1e-9), "videos_without_frames": empty}
    if empty:
      tf.logging.warning("%d of the %d videos have 0 frames: evaluated on the model's output for an "
                         "input without frames.", empty, videos)
    tf.logging.info("step %d | %d videos | GAP %.4f | mAP %.4f | Hit@1 %.4f | PERR %.4f | loss %.4f | "
                    "%.0f videos/sec", step, summary["num_videos"], summary["gap"], summary["map"],
                    summary["hit_at_one"], summary["perr"], summary["loss"], summary["videos_per_sec"])
    self._write(summary)
    return summary

  def _write(self, summary):
    eval_dir = os.path.join(self.train_dir, "eval")
    tf.io.gfile.makedirs(eval_dir)
    writer = tf.summary.FileWriterCache.get(eval_dir)
    for tag, key in (("GAP", "gap"), ("mAP", "map"), ("Hit@1", "hit_at_one"), ("PERR", "perr"),
                     ("loss", "loss")):
      writer.add_summary(utils.scalar_summary("eval/" + tag, summary[key]), summary["global_step"])
    writer.flush()
    for name in ("metrics-%d.json" % summary["global_step"], "metrics.json"):
      utils.write_json_atomic(os.path.join(eval_dir, name), summary)


def evaluated_steps(train_dir):
  return {int(m.group(1)) for m in (re.search(r"metrics-(\d+)\.json$", p) for p in
                                     glob.glob(os.path.join(train_dir, "eval", "metrics-*.json"))) if m}


def checkpoint_step(path):
  return int(path.rsplit("-", 1)[1])


def run(opts):
  """Evaluates once (--run_once / --checkpoint_file) or watches the train_dir for new checkpoints;
  returns the list of metrics dicts."""
  config.check_passed_flags(config.load_model_flags(opts.train_dir), opts, opts.train_dir)
  evaluator = Evaluator(opts.train_dir, opts.eval_data_pattern, opts.batch_size, opts.top_k,
                        opts.num_readers, opts.log_every_batches)
  if opts.checkpoint_file or opts.run_once:
    checkpoint = model_utils.resolve_checkpoint(opts.checkpoint_file or opts.train_dir,
                                                "--checkpoint_file" if opts.checkpoint_file
                                                else "--train_dir")
    return [evaluator.evaluate(checkpoint)]
  results, last_new = [], time.time()
  while time.time() - last_new < opts.max_wait_secs:
    state = tf.train.get_checkpoint_state(opts.train_dir)
    done = evaluated_steps(opts.train_dir)
    pending = [p for p in (state.all_model_checkpoint_paths if state else [])
               if checkpoint_step(p) not in done and tf.io.gfile.exists(p + ".index")]
    if pending:
      for checkpoint in pending:
        try:
          results.append(evaluator.evaluate(checkpoint))
        except (tf.errors.NotFoundError, ValueError):
          if tf.io.gfile.exists(checkpoint + ".index"):
            raise
          # Training keeps the last --keep_checkpoint_max: an old one can go while the queue waits.
          tf.logging.warning("%s was deleted before it could be evaluated: skipped.", checkpoint)
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
