"""Test set-up: graph-mode TF, the `slow` marker (make check leaves those tests out), the shared data
fixture and the TensorFlow log lines of a test; the helpers themselves are in helpers.py."""

import logging

import pytest
import tensorflow.compat.v1 as tf

from helpers import frame_record, learnable_videos, write_records

tf.disable_v2_behavior()


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: a full-size graph, a training loop or a fresh interpreter "
                                     "(make check leaves these out; make test runs everything)")


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


@pytest.fixture
def tf_log():
  """The lines TensorFlow logs during a test (its logger does not propagate to pytest's caplog)."""
  lines = []
  handler = logging.Handler()
  handler.emit = lambda record: lines.append(record.getMessage())
  tf.get_logger().addHandler(handler)
  yield lines
  tf.get_logger().removeHandler(handler)
