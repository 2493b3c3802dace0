"""Teacher cache: a frozen teacher's outputs for every training video, written once by cache_teacher.py
and read beside the data by serial KD runs (train.py --model_type=kd --teacher_cache=DIR).

A cache directory holds `manifest.json` and one cache shard per data shard, under the data shard's file
name. A cache shard is a TFRecord file of tf.train.Example records in the data shard's record order:
`id` (the video id), `predictions`, `representation` and, unless written with --cache_logits=False,
`logits`, each the little-endian bytes of a float32, float16 or bfloat16 vector (the manifest's
`dtype`; float32 values rounded to nearest, ties to even). The manifest names the teacher checkpoint
(path and global step), the teacher's model_flags, the dtype, the precision the teacher ran in
(`mixed_precision`), the vector sizes and every shard's record count and source file.

A KD run reads data shard i together with cache shard i, record by record, and checks every record's
id before shuffling (readers.py), so interleaving, shuffling and distributed workers work as for plain
data. A serial frozen teacher runs in inference mode, so its outputs for a video never change: a
float32 cache gives exactly the live teacher's distillation terms.
"""

import os

import numpy as np
import tensorflow.compat.v1 as tf

import config
import readers
import utils
from utils import InputError

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16", "bfloat16")
OUTPUTS = ("predictions", "logits", "representation")
MANIFEST_KEYS = ("teacher_checkpoint", "global_step", "teacher_model_flags", "sizes", "shards")
LEGACY_MANIFEST = {"mixed_precision": "none"}   # what a manifest written before the key was made with


def check_usable(opts):
  """The one place that refuses KD settings whose teacher a cache cannot stand in for: the teacher
  must be frozen and deterministic (a teacher trained in the same run, or one run in training mode
  with dropout and batch statistics, gives other outputs at every step)."""
  if opts.kd_mode != "serial":
    raise InputError("--teacher_cache=%s with --kd_mode=%s: a cache holds a frozen teacher's outputs; "
                     "it serves --kd_mode=serial only" % (opts.teacher_cache, opts.kd_mode))
  if opts.kd_teacher_is_training:
    raise InputError("--teacher_cache=%s with --kd_teacher_is_training: a cache holds an inference-mode "
                     "teacher's outputs; the seed's training-mode teacher changes at every step"
                     % opts.teacher_cache)


def shard_path(cache_dir, data_file):
  """The cache shard of a data shard: the same file name in the cache directory."""
  return os.path.join(cache_dir, os.path.basename(data_file))


def manifest_path(cache_dir):
  return os.path.join(cache_dir, MANIFEST_FILE)


def encode(video_id, outputs, dtype):
  """One cache record (serialized tf.train.Example) from a video id and {output name: 1-D array}."""
  example = tf.train.Example()
  feature = example.features.feature
  feature["id"].bytes_list.value.append(video_id)
  numpy_dtype = np.dtype(tf.as_dtype(dtype).as_numpy_dtype).newbyteorder("<")  # bfloat16: ml_dtypes's type
  for name, values in outputs.items():
    feature[name].bytes_list.value.append(np.asarray(values, numpy_dtype).tobytes())
  return example.SerializeToString()


class TeacherCache(object):
  """A cache directory opened for reading: its manifest, shard checks and the record parser."""

  def __init__(self, cache_dir, flag_name="--teacher_cache"):
    path = manifest_path(cache_dir)
    if not tf.io.gfile.exists(path):
      raise InputError("%s=%s holds no %s: expected a directory written by cache_teacher.py"
                       % (flag_name, cache_dir, MANIFEST_FILE))
    manifest = utils.read_json(path, "the manifest cache_teacher.py writes")
    if manifest.get("format") != FORMAT_VERSION or manifest.get("dtype") not in DTYPES:
      raise InputError("%s: format %r, dtype %r: expected format %d written by cache_teacher.py"
                       % (path, manifest.get("format"), manifest.get("dtype"), FORMAT_VERSION))
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
      raise InputError("%s lacks %s: expected the manifest cache_teacher.py writes"
                       % (path, ", ".join(missing)))
    self.cache_dir, self.flag_name, self.manifest = cache_dir, flag_name, manifest
    self.teacher_checkpoint = manifest["teacher_checkpoint"]
    self.teacher_flags = config.with_legacy_flags(manifest["teacher_model_flags"])
    self.precise_bn = manifest.get("precise_bn")   # precise_bn.record() of the teacher cached, or None
    self.sizes = {name: manifest["sizes"][name] for name in OUTPUTS if name in manifest["sizes"]}

  @property
  def has_logits(self):
    return "logits" in self.sizes

  def describe(self):
    return "%s=%s (teacher %s, step %d, %s)" % (self.flag_name, self.cache_dir, self.teacher_checkpoint,
                                                self.manifest["global_step"], self.manifest["dtype"])

  def check_teacher(self, checkpoint, teacher_flags, flag_name="--teacher_checkpoint"):
    """The cache must come from this checkpoint, and the checkpoint's model flags be the recorded ones."""
    if os.path.abspath(checkpoint) != os.path.abspath(self.teacher_checkpoint):
      raise InputError("%s was written from another teacher than %s=%s (%s)" % (
          self.describe(), flag_name, checkpoint, os.path.abspath(checkpoint)))
    changed = sorted(name for name in set(teacher_flags) | set(self.teacher_flags)
                     if teacher_flags.get(name) != self.teacher_flags.get(name))
    if changed:
      raise InputError("%s recorded teacher flags that differ from %s's model_flags.json: %s" % (
          self.describe(), checkpoint, ", ".join("%s=%s (cache has %s)" % (
              name, teacher_flags.get(name), self.teacher_flags.get(name)) for name in changed)))

  def path_for(self, data_file):
    return shard_path(self.cache_dir, data_file)

  def check_shards(self, files, counts):
    """Before training: every data shard has its cache shard, with the data shard's record count
    (counts[i]: records of files[i], None where unknown, e.g. remote files)."""
    shards = self.manifest["shards"]
    for data_file, count in zip(files, counts):
      name = os.path.basename(data_file)
      cache_file = self.path_for(data_file)
      if name not in shards or not tf.io.gfile.exists(cache_file):
        raise InputError("%s has no cache shard for %s (expected %s): run cache_teacher.py on it"
                         % (self.describe(), data_file, cache_file))
      cached, _ = readers.check_tfrecord_framing(cache_file)
      for what, found in (("the cache shard %s" % cache_file, cached), (data_file, count)):
        if found is not None and found != shards[name]["records"]:
          raise InputError("%s has %d records, %s's manifest says %d for %s: the cache does not match "
                           "the data; write it again with cache_teacher.py" % (
                               what, found, self.cache_dir, shards[name]["records"], name))

  def parse(self, serialized):
    """One cache record -> {"video_ids", "teacher_<output>": float32 vector} (tensors)."""
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in ["id"] + list(self.sizes)}
    features = tf.io.parse_single_example(serialized, spec)
    parsed = {"video_ids": features["id"]}
    for name, size in self.sizes.items():
      values = tf.io.decode_raw(features[name], getattr(tf, self.manifest["dtype"]), little_endian=True)
      parsed["teacher_" + name] = tf.cast(tf.reshape(values, [size]), tf.float32)
    return parsed
