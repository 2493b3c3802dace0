"""Test set-up: graph-mode TF, the `slow` marker (make check leaves those tests out), the shared data
fixture and the TensorFlow log lines of a test; the helpers themselves are in helpers.py."""

import logging

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from helpers import frame_record, learnable_videos, write_records

tf.disable_v2_behavior()


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: a full-size graph, a training loop or a fresh interpreter "
                                     "(make check leaves these out; make test runs everything)")


def pytest_collection_modifyitems(items):
  """The longest files first (a stable sort), so that with two pytest-xdist workers taking one file at
  a time none of them runs alone at the end: a file's length is its EXPECTED_SECONDS where it sets one
  (one long test), otherwise 20 s per slow test."""
  length = {}
  for item in items:
    expected = getattr(item.module, "EXPECTED_SECONDS", None)
    slow = 20 * (item.get_closest_marker("slow") is not None)
    length[item.fspath] = expected if expected is not None else length.get(item.fspath, 0) + slow
  items.sort(key=lambda item: -length[item.fspath])


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


@pytest.fixture(scope="session")
def full_size_data(tmp_path_factory):
  """The seed's full feature sizes: 80 videos with real feature sizes (1024 + 128), 20-60 frames, 3862 classes."""
  root = tmp_path_factory.mktemp("seed_data")
  rng = np.random.RandomState(0)
  records = []
  for i in range(80):
    n = rng.randint(20, 61)
    records.append(frame_record("s%03d" % i, sorted(rng.choice(3862, 3, replace=False).tolist()),
                                {"rgb": rng.randint(0, 256, (n, 1024)), "audio": rng.randint(0, 256, (n, 128))}))
  write_records(str(root / "train0000.tfrecord"), records)
  return str(root / "train*.tfrecord")


@pytest.fixture
def tf_log():
  """The lines TensorFlow logs during a test (its logger does not propagate to pytest's caplog)."""
  lines = []
  handler = logging.Handler()
  handler.emit = lambda record: lines.append(record.getMessage())
  tf.get_logger().addHandler(handler)
  yield lines
  tf.get_logger().removeHandler(handler)
