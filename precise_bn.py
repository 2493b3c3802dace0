"""Precise batch-norm statistics for a frozen model (Wu & Johnson, "Rethinking 'Batch' in BatchNorm",
2021; docs/BACKGROUND.md, "Batch-norm moving averages").

A moving average with decay d still holds d^n of its initial value after n updates: after a short run
(0.999^625 = 0.53) the moving statistics that inference, evaluation and a frozen KD teacher use are
about half their initial 0 / 1. With every weight fixed, this recomputes each batch-norm layer's
population statistics from N training batches:

    mean     = (1/N) Σ_b m_b
    variance = (1/N) Σ_b v_b + (1/N) Σ_b (m_b - mean)²      (law of total variance, biased)

where m_b and v_b are the batch mean and the biased batch variance the layer sees on batch b. The
model runs as in training (every batch norm on its batch statistics, so each layer sees the inputs it
was trained on) but without dropout, whose noise the frozen model never sees at inference. One pass over
the N batches recomputes every layer at once. The batches are drawn in a reproducible order (seed 0):
the same checkpoint, data and N give the same statistics every time.

  python precise_bn.py --teacher_checkpoint=RUN --input_data_pattern='/data/train*.tfrecord' \\
      --output_dir=RUN_precise --precise_bn_batches=200

writes a new train_dir: the checkpoint (same global step, every variable of the model's scope, the
batch-norm moving statistics replaced), the run's model_flags.json and precise_bn.json (what was
recomputed, from what). eval.py, inference.py, export_model.py and train.py --teacher_checkpoint read
it like any run. train.py --model_type=kd and cache_teacher.py do this themselves with
--precise_bn_batches.
"""

import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf

import checkpoints
import config
import layers
import model_utils
import readers
import utils
from utils import InputError

# --teacher_checkpoint, --input_data_pattern, --output_dir, --precise_bn_batches, --batch_size and
# --num_readers are config.py's.
RECORD_FILE = "precise_bn.json"
SHUFFLE_BUFFER = 1024


def record(checkpoint, data_pattern, batches, batch_size, seed):
  """What a precise-BN checkpoint is made of (its precise_bn.json; a rerun reuses it only if equal).
  Local paths are made absolute, so that a rerun from another spelling of the same paths matches."""
  return {"source_checkpoint": os.path.abspath(checkpoint), "data_pattern": _absolute(data_pattern),
          "batches": int(batches), "batch_size": int(batch_size), "seed": int(seed)}


def _absolute(pattern):
  return pattern if "://" in pattern else os.path.abspath(pattern)


def normalized(made):
  """A record read back, its data pattern absolute (records written before record() made it so)."""
  if not made or "data_pattern" not in made:
    return made
  return dict(made, data_pattern=_absolute(made["data_pattern"]))


def applies(checkpoint):
  """Whether `checkpoint` holds batch-norm moving statistics to recompute (NeXtVLAD, NetVLAD and DBoF
  do; the recurrent models and the logistic ones have none, and --precise_bn_batches leaves them be)."""
  return any(name.endswith("/moving_mean") for name, _ in tf.train.list_variables(checkpoint))


def population_statistics(batch_means, batch_variances):
  """(mean, variance) from per-batch means and biased variances [N, C] (the module docstring)."""
  means, variances = np.asarray(batch_means, np.float64), np.asarray(batch_variances, np.float64)
  mean = means.mean(axis=0)
  return mean, variances.mean(axis=0) + ((means - mean) ** 2).mean(axis=0)


def _statistics_graph(model_flags, files, batch_size, seed, num_readers, shuffle):
  """The model in training mode without dropout on training batches: (saver of its scope and the
  global step, [BatchNormStatistics], iterator initialiser, reader)."""
  reader = model_utils.make_reader(model_flags, seed=seed)
  batch, init = reader.input_batch(files, batch_size, training=shuffle, num_readers=num_readers,
                                   shuffle_buffer=SHUFFLE_BUFFER, seed=seed, deterministic=True)
  model_utils.build_model(dict(model_flags, drop_rate=0.0), batch["video_matrix"], batch["num_frames"],
                          is_training=True)
  statistics = layers.batch_norm_statistics()
  if not statistics:
    raise InputError("--model=%s has no batch norm: there are no statistics to recompute"
                     % model_flags["model"])
  global_step = tf.train.get_or_create_global_step()
  saver = tf.train.Saver(model_utils.scope_variables(config.role_scope(model_flags)) + [global_step])
  return saver, statistics, init, reader


def recompute(checkpoint, data_pattern, batches, output_dir, batch_size=80, seed=0, num_readers=4,
              shuffle=True):
  """Writes output_dir (a train_dir) holding `checkpoint` with the population batch-norm statistics of
  `batches` training batches of `data_pattern`; returns the new checkpoint path. An output_dir made
  from the same record is reused; one made otherwise is refused (InputError). `shuffle=False` reads
  the files in order (one pass at most; the tests)."""
  if batches < 1:
    raise InputError("--precise_bn_batches=%s: expected a positive number of batches" % batches)
  wanted = record(checkpoint, data_pattern, batches, batch_size, seed)
  record_path = os.path.join(output_dir, RECORD_FILE)
  if tf.io.gfile.exists(record_path):
    made = utils.read_json(record_path, "the record precise_bn.py writes")
    if not is_record_of(made, wanted):
      raise InputError("%s holds precise batch-norm statistics made otherwise (%s, wanted %s); remove it "
                       "or choose another directory" % (output_dir, made, wanted))
    done = tf.train.latest_checkpoint(output_dir)
    if done:
      tf.logging.info("Precise batch-norm statistics already in %s.", done)
      return done
  model_flags = config.load_model_flags(model_utils.train_dir_of(checkpoint))
  files = readers.resolve_files(data_pattern, "--input_data_pattern")
  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(seed)
    saver, statistics, init, reader = _statistics_graph(model_flags, files, batch_size, seed,
                                                        num_readers, shuffle)
    fetch = [(s.mean, s.variance) for s in statistics]
  graph.finalize()
  with tf.Session(graph=graph) as sess:
    saver.restore(sess, checkpoint)
    sess.run(init)
    means, variances = [[] for _ in statistics], [[] for _ in statistics]
    for count, values in enumerate(readers.read_batches(sess, fetch, files, reader)):
      if count == batches:
        break
      for i, (mean, variance) in enumerate(values):
        means[i].append(mean)
        variances[i].append(variance)
    seen = len(means[0])
    if seen < batches:
      tf.logging.warning("%s holds %d batch(es) of %d videos, fewer than --precise_bn_batches=%d: the "
                         "statistics come from those.", data_pattern, seen, batch_size, batches)
    if not seen:
      raise InputError("%s gave no batch of %d videos: expected training shards" % (data_pattern, batch_size))
    for i, layer in enumerate(statistics):
      mean, variance = population_statistics(means[i], variances[i])
      layer.moving_mean.load(mean.astype(np.float32), sess)
      layer.moving_variance.load(variance.astype(np.float32), sess)
    step = int(sess.run(tf.train.get_global_step(graph)))
    tf.io.gfile.makedirs(output_dir)
    path = saver.save(sess, os.path.join(output_dir, "model.ckpt"), global_step=step,
                      write_meta_graph=False)
  config.write_model_flags(output_dir, model_flags)
  utils.write_json_atomic(record_path, dict(wanted, batches_read=seen, layers=len(statistics)))
  tf.logging.info("Recomputed the statistics of %d batch norm(s) of %s from %d batch(es) of %d videos: %s.",
                  len(statistics), checkpoint, seen, batch_size, path)
  return path


def is_record_of(made, wanted):
  """Whether a precise_bn.json `made` was written for `wanted` (a record())."""
  made = normalized(made)
  return {key: made.get(key) for key in wanted} == wanted


def run(opts):
  if not opts.output_dir:
    raise InputError("--output_dir is empty: expected the new train_dir to write")
  if not opts.teacher_checkpoint:
    raise InputError("--teacher_checkpoint is empty: expected the train_dir or checkpoint to recompute")
  checkpoint = checkpoints.choose(opts.teacher_checkpoint, "--teacher_checkpoint", fallback=False)
  return recompute(checkpoint, opts.input_data_pattern, opts.precise_bn_batches, opts.output_dir,
                   opts.batch_size, num_readers=opts.num_readers)


main = utils.flag_program(run)

if __name__ == "__main__":
  utils.run_cli(main, sys.argv)
