"""Shared test fixtures: graph-mode TF, small hand-built YouTube-8M shards, the real-data folder."""

import os
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
tf.disable_v2_behavior()

REAL_DATA_DIR = os.environ.get("YT8M_REAL_DATA", os.path.join(ROOT, "..", "shared", "data"))


def real_data_path(*parts):
  """Path under the shared real YouTube-8M folder, or skip the test saying why."""
  path = os.path.join(REAL_DATA_DIR, *parts)
  if not os.path.exists(path):
    pytest.skip("real YouTube-8M shards not found at %s (set YT8M_REAL_DATA to the shared/data folder)"
                % path)
  return path


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int64(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def frame_record(video_id, labels, features, id_key="id"):
  """Serialized SequenceExample: `features` maps name -> uint8 array [frames, size] (or list of bytes)."""
  context = {id_key: _bytes([video_id.encode()])}
  if labels is not None:
    context["labels"] = _int64(labels)
  lists = {}
  for name, frames in features.items():
    frame_bytes = [f if isinstance(f, bytes) else np.asarray(f, np.uint8).tobytes() for f in frames]
    lists[name] = tf.train.FeatureList(feature=[_bytes([b]) for b in frame_bytes])
  return tf.train.SequenceExample(
      context=tf.train.Features(feature=context),
      feature_lists=tf.train.FeatureLists(feature_list=lists)).SerializeToString()


def video_record(video_id, labels, features, id_key="id"):
  """Serialized Example with float features (video level)."""
  feature = {id_key: _bytes([video_id.encode()])}
  if labels is not None:
    feature["labels"] = _int64(labels)
  for name, values in features.items():
    feature[name] = _floats(list(np.asarray(values, np.float32)))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_records(path, records):
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  return path


def make_frame_videos(num_videos, sizes=(8, 4), num_classes=10, seed=0, min_frames=1, max_frames=40):
  """Random videos: list of (id, labels, {name: uint8 [n, size]})."""
  rng = np.random.RandomState(seed)
  videos = []
  for i in range(num_videos):
    n = rng.randint(min_frames, max_frames + 1)
    labels = sorted(rng.choice(num_classes, rng.randint(1, 4), replace=False).tolist())
    features = {"rgb": rng.randint(0, 256, (n, sizes[0])).astype(np.uint8),
                "audio": rng.randint(0, 256, (n, sizes[1])).astype(np.uint8)}
    videos.append(("v%04d" % i, labels, features))
  return videos


def run_batches(batch, init, max_batches=1000):
  """Evaluates a reader's batch tensors until the data runs out; returns the list of numpy dicts."""
  out = []
  with tf.Session() as sess:
    sess.run(init)
    for _ in range(max_batches):
      try:
        out.append(sess.run(batch))
      except tf.errors.OutOfRangeError:
        break
  return out
