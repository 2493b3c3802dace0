"""Runs a frozen teacher once over training shards and writes its outputs, one cache shard per data
shard, for serial KD runs that read them instead of running the teacher (train.py --teacher_cache=DIR).

  python cache_teacher.py --teacher_checkpoint=RUN --input_data_pattern='/data/train*.tfrecord' \
      --cache_dir=DIR [--cache_dtype=float16] [--cache_logits=False] [--mixed_precision=bfloat16] \
      [--precise_bn_batches=200 [--precise_bn_data_pattern='/data/train*.tfrecord']]

The teacher is rebuilt from its own model_flags.json and reads its frames as a live KD teacher does
(all frames, its own preprocessing) in inference mode. The format is described in teacher_cache.py.
Each cache shard is written to a temporary name and renamed, then the manifest is updated: a run
stopped part-way resumes at the first shard it had not finished. A directory holding a cache of
another teacher checkpoint, dtype or set of outputs is refused.
"""

import os
import sys
import time

import tensorflow.compat.v1 as tf

import checkpoints
import config
import kd_teacher
import model_utils
import precise_bn
import precision
import readers
import teacher_cache
import utils
from utils import InputError

flags = tf.flags

# --teacher_checkpoint, --input_data_pattern (the training shards to cache) and --batch_size (videos
# per teacher batch) are config.py's.
flags.DEFINE_string("cache_dir", "", "Directory of the cache shards and manifest.json.")
flags.DEFINE_enum("cache_dtype", "float32", list(teacher_cache.DTYPES),
                  "float32 (exactly the live teacher's values), float16 or bfloat16 (half the size; "
                  "bfloat16 keeps float32's range with 8 bits of mantissa, float16 11 bits).",
                  case_sensitive=False)
flags.DEFINE_bool("cache_logits", True, "Also cache the teacher's logits (needed by --pred_loss=kl).")
flags.DEFINE_string("precise_bn_data_pattern", "",
                    "With --precise_bn_batches: the shards the teacher's batch-norm statistics are recomputed "
                    "from (default: --input_data_pattern). Caching part of the training data (a student "
                    "trained on less data) keeps the teacher of the whole training set.")
PROGRESS_SECS = 10.0
PRECISE_BN_DIR = "teacher_precise_bn"   # in the cache directory


def _manifest_header(checkpoint, teacher_flags, opts, sizes, precise, mixed_precision):
  step = int(tf.train.load_checkpoint(checkpoint).get_tensor("global_step"))
  return {"format": teacher_cache.FORMAT_VERSION, "teacher_checkpoint": os.path.abspath(checkpoint),
          "global_step": step, "teacher_model_flags": teacher_flags, "dtype": opts.cache_dtype,
          "sizes": sizes, "precise_bn": precise, "mixed_precision": mixed_precision}


def _open_manifest(cache_dir, header):
  """The manifest of `cache_dir`: a new one, or the existing one if it was made with `header`."""
  tf.io.gfile.makedirs(cache_dir)
  if not tf.io.gfile.exists(teacher_cache.manifest_path(cache_dir)):
    return dict(header, shards={})
  cache = teacher_cache.TeacherCache(cache_dir, "--cache_dir")
  existing = dict(teacher_cache.LEGACY_MANIFEST, **cache.manifest)
  existing["teacher_model_flags"] = cache.teacher_flags
  existing["precise_bn"] = precise_bn.normalized(existing.get("precise_bn"))
  changed = ["%s %s (cache has %s)" % (key, header[key], existing.get(key))
             for key in sorted(header) if header[key] != existing.get(key)]
  if changed:
    raise InputError("--cache_dir=%s holds a cache made otherwise: %s; use another --cache_dir"
                     % (cache_dir, "; ".join(changed)))
  return existing


def _teacher_graph(teacher_flags, logits, batch_size):
  """One shard at a time, in record order: (filename placeholder, iterator init, fetch, saver)."""
  reader = model_utils.make_reader(teacher_flags)
  filename = tf.placeholder(tf.string, [], name="shard")
  parse = tf.autograph.experimental.do_not_convert(lambda r: reader.parse_record(filename, r, False))
  dataset = tf.data.TFRecordDataset(filename).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
  iterator = tf.data.make_initializable_iterator(dataset.batch(batch_size).prefetch(2))
  batch = iterator.get_next()
  outputs = model_utils.build_model(teacher_flags, batch["video_matrix"], batch["num_frames"],
                                    is_training=False)
  fetch = {name: outputs[name] for name in teacher_cache.OUTPUTS if logits or name != "logits"}
  fetch["video_ids"] = batch["video_ids"]
  saver = tf.train.Saver(model_utils.scope_variables(config.role_scope(teacher_flags)))
  return filename, iterator.initializer, fetch, saver, reader


def run(opts):
  """Writes the cache; returns its manifest. The teacher checkpoint is exactly the one named (a
  train_dir: its latest), read back whole: a damaged one is refused (checkpoints.choose)."""
  if not opts.cache_dir:
    raise InputError("--cache_dir is empty: expected the directory to write the cache to")
  if not opts.teacher_checkpoint:
    raise InputError("--teacher_checkpoint is empty: expected a teacher train_dir or checkpoint")
  checkpoint = checkpoints.choose(opts.teacher_checkpoint, "--teacher_checkpoint", fallback=False)
  teacher_flags = config.load_model_flags(model_utils.train_dir_of(checkpoint))
  if not teacher_flags["frame_features"] or config.frames_read(teacher_flags) is not None:
    raise InputError("--teacher_checkpoint=%s reads %s frames: a cache holds a teacher that reads all frames "
                     "of frame-level data (a KD teacher on the student's k frames runs live)"
                     % (opts.teacher_checkpoint, teacher_flags["k_frame"]))
  files = readers.resolve_files(opts.input_data_pattern, "--input_data_pattern")
  names = [os.path.basename(f) for f in files]
  if len(set(names)) != len(names):
    twice = sorted({n for n in names if names.count(n) > 1})
    raise InputError("--input_data_pattern=%s: file name %s occurs in several folders; cache shards pair "
                     "with data shards by file name" % (opts.input_data_pattern, twice[0]))
  graph = tf.Graph()
  with graph.as_default():
    filename, init, fetch, saver, reader = _teacher_graph(teacher_flags, opts.cache_logits, opts.batch_size)
    sizes = {name: int(fetch[name].shape[-1]) for name in fetch if name != "video_ids"}
  counts = reader.validate_files(files)
  statistics_pattern = opts.precise_bn_data_pattern or opts.input_data_pattern
  if opts.precise_bn_batches and opts.precise_bn_data_pattern:
    reader.validate_files(readers.resolve_files(statistics_pattern, "--precise_bn_data_pattern"))
  precise = (precise_bn.record(checkpoint, statistics_pattern, opts.precise_bn_batches, opts.batch_size, 0)
             if opts.precise_bn_batches and precise_bn.applies(checkpoint) else None)
  mixed_precision = precision.resolve(opts.mixed_precision)
  manifest = _open_manifest(opts.cache_dir, _manifest_header(checkpoint, teacher_flags, opts, sizes, precise,
                                                             mixed_precision))
  restored = checkpoint
  if precise:  # the teacher cached has its batch-norm statistics recomputed (by default from the data cached)
    restored = precise_bn.recompute(checkpoint, statistics_pattern, opts.precise_bn_batches,
                                    os.path.join(opts.cache_dir, PRECISE_BN_DIR), opts.batch_size,
                                    num_readers=opts.num_readers)
  else:
    kd_teacher.warn_if_unconverged(checkpoint, teacher_flags, "--teacher_checkpoint=" + checkpoint)
  done = lambda f, n: (os.path.basename(f) in manifest["shards"] and
                       n in (None, manifest["shards"][os.path.basename(f)]["records"]) and
                       tf.io.gfile.exists(teacher_cache.shard_path(opts.cache_dir, f)))
  pending = [(f, n) for f, n in zip(files, counts) if not done(f, n)]
  total = sum(n or 0 for _, n in pending)
  tf.logging.info("Caching %s (step %d) over %d of %d shard(s), %d videos, into %s (%s, teacher run in %s).",
                  checkpoint, manifest["global_step"], len(pending), len(files), total, opts.cache_dir,
                  opts.cache_dtype, "float32" if mixed_precision == "none" else mixed_precision)
  graph.finalize()
  with tf.Session(graph=graph, config=precision.session_config(mixed_precision)) as sess:
    saver.restore(sess, restored)
    start, written, last_log = time.time(), 0, time.time()
    for index, (data_file, count) in enumerate(pending):
      target = teacher_cache.shard_path(opts.cache_dir, data_file)
      tmp, records = target + ".tmp", 0
      sess.run(init, {filename: data_file})
      try:
        with tf.io.TFRecordWriter(tmp) as writer:
          for values in readers.read_batches(sess, fetch, [data_file], reader):
            for row, video_id in enumerate(values["video_ids"]):
              writer.write(teacher_cache.encode(video_id, {name: values[name][row] for name in sizes},
                                                opts.cache_dtype))
            records += len(values["video_ids"])
            written += len(values["video_ids"])
            if time.time() - last_log >= PROGRESS_SECS:
              _progress(index, len(pending), data_file, written, total, start)
              last_log = time.time()
      except BaseException:  # no half-written shard is left behind
        if tf.io.gfile.exists(tmp):
          tf.io.gfile.remove(tmp)
        raise
      tf.io.gfile.rename(tmp, target, overwrite=True)
      manifest["shards"][os.path.basename(data_file)] = {"records": records, "source": data_file}
      utils.write_json_atomic(teacher_cache.manifest_path(opts.cache_dir), manifest)
      _progress(index, len(pending), data_file, written, total, start)
  tf.logging.info("Cache %s complete: %d shard(s), %d videos.", opts.cache_dir, len(manifest["shards"]),
                  sum(s["records"] for s in manifest["shards"].values()))
  return manifest


def _progress(index, shards, data_file, written, total, start):
  rate = written / max(time.time() - start, 1e-9)
  eta = (total - written) / rate if rate > 0 and total >= written else 0
  tf.logging.info("shard %d/%d %s | %d/%d videos | %.0f videos/sec | ETA %s", index + 1, shards,
                  os.path.basename(data_file), written, total, rate, time.strftime("%H:%M:%S", time.gmtime(eta)))


main = utils.flag_program(run)

if __name__ == "__main__":
  utils.run_cli(main, sys.argv)
