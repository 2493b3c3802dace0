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

import utils  # noqa: E402  (after the path insertion above)

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


def learnable_videos(num_videos, sizes=(16, 4), num_classes=8, seed=0, max_frames=24, id_prefix="v"):
  """Videos whose frames carry their labels: each class has a direction, added to a random subset of
  the frames on top of noise, then quantized like YouTube-8M. Small enough to learn in seconds."""
  rng = np.random.RandomState(seed)
  prototypes = np.random.RandomState(1234).randn(num_classes, sum(sizes)).astype(np.float32)
  frequency = 1.0 / np.arange(1, num_classes + 1)
  videos = []
  for i in range(num_videos):
    n = rng.randint(4, max_frames + 1)
    count = rng.randint(1, 4)
    labels = sorted(rng.choice(num_classes, count, replace=False, p=frequency / frequency.sum()).tolist())
    frames = 0.5 * rng.randn(n, sum(sizes)).astype(np.float32)
    for label in labels:
      present = rng.rand(n) < 0.6
      frames[present] += 0.6 * prototypes[label]
    q = utils.quantize(frames)
    videos.append(("%s%05d" % (id_prefix, i), labels,
                   {"rgb": q[:, :sizes[0]], "audio": q[:, sizes[0]:]}))
  return videos


@pytest.fixture(scope="session")
def frame_data(tmp_path_factory):
  """Tiny learnable frame-level data set: train (2 shards, 480 videos), validate (1 shard, 150)."""
  root = tmp_path_factory.mktemp("frame_data")
  train = learnable_videos(480, seed=1, id_prefix="t")
  write_records(str(root / "train0000.tfrecord"), [frame_record(*v) for v in train[:240]])
  write_records(str(root / "train0001.tfrecord"), [frame_record(*v) for v in train[240:]])
  validate = learnable_videos(150, seed=2, id_prefix="v")
  write_records(str(root / "validate0000.tfrecord"), [frame_record(*v) for v in validate])
  return {"root": root, "train": str(root / "train*.tfrecord"),
          "validate": str(root / "validate*.tfrecord"), "train_videos": train,
          "validate_videos": validate, "num_classes": 8, "feature_sizes": "16,4"}
