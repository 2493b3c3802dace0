"""What the tests share: paths, hand-built YouTube-8M records and shards, the small model and the train.py
command line of the training tests, model flags with every default, the distributed runner, random
weights, and running a program as a user does (a fresh interpreter, its documented command line)."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import config  # noqa: E402  (after the path insertion above)
import model_utils  # noqa: E402
import utils  # noqa: E402

# Real YouTube-8M shards: $YT8M_REAL_DATA, or data/real/ in the repository (git-ignored; link or copy
# shards there). Tests that need them skip with the reason when neither exists.
REAL_DATA_DIR = os.environ.get("YT8M_REAL_DATA", os.path.join(ROOT, "data", "real"))


def real_data_path(*parts):
  """Path under the shared real YouTube-8M folder, or skip the test saying why."""
  path = os.path.join(REAL_DATA_DIR, *parts)
  if not os.path.exists(path):
    pytest.skip("real YouTube-8M shards not found at %s (set YT8M_REAL_DATA to a folder of real shards, or put them in data/real)"
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


# -- training runs -------------------------------------------------------------------------------------
SMALL_MODEL = ["--groups=2", "--nextvlad_cluster_size=8", "--nextvlad_hidden_size=32", "--expansion=2",
               "--gating_reduction=4", "--drop_rate=0.2", "--max_frames=24"]


def train_args(data, train_dir, *extra):
  """train.py's command line (argv[0] included) for a small NeXtVLAD on the `data` fixture."""
  return ["train.py", "--train_data_pattern=" + data["train"], "--train_dir=" + str(train_dir),
          "--feature_names=rgb,audio", "--feature_sizes=" + data["feature_sizes"],
          "--num_classes=%d" % data["num_classes"], "--batch_size=16", "--base_learning_rate=0.01",
          "--num_epochs=0", "--export_model_steps=1000", "--log_every_steps=20",
          "--num_readers=2", "--shuffle_buffer=256"] + SMALL_MODEL + list(extra)


def model_flags(**overrides):
  """A run's model flags: every config.MODEL_FLAG_NAMES flag at its default, then `overrides`."""
  values = {name: config.FLAGS[name].default for name in config.MODEL_FLAG_NAMES}
  unknown = set(overrides) - set(values)
  assert not unknown, "not model flags: %s" % sorted(unknown)
  values.update(overrides)
  return model_utils.model_flags_from(values)


def run_program(program, *args, timeout=900, env=None):
  """Runs `program` (a path under the repository: train.py, scripts/run_study.py, ...) in a fresh
  interpreter with `args`, from the repository root, as a user does; returns the CompletedProcess
  (stdout and stderr as text)."""
  environment = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
  return subprocess.run([sys.executable, os.path.join(ROOT, program)] + [str(a) for a in args],
                        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environment)


def run_ok(program, *args, **kwargs):
  """run_program, asserting exit status 0 (the output's tail in the message otherwise)."""
  result = run_program(program, *args, **kwargs)
  assert result.returncode == 0, "%s exited %d:\n%s" % (program, result.returncode,
                                                        (result.stdout + result.stderr)[-4000:])
  return result


# -- distributed: 1 parameter server + 2 workers on 127.0.0.1 ---------------------------------------------
def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def loopback_cluster():
  ps_port, w0, w1 = free_ports(3)
  return {"ps": ["127.0.0.1:%d" % ps_port], "worker": ["127.0.0.1:%d" % w0, "127.0.0.1:%d" % w1]}


def starter(cluster, args, log_dir):
  """start(task_type, index, name) runs train.py as that task, logging to log_dir/name.log."""
  def start(task_type, index, name=None):
    env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                 "task": {"type": task_type, "index": index}}),
               CUDA_VISIBLE_DEVICES="")
    log = open(str(log_dir / ("%s.log" % (name or "%s%d" % (task_type, index)))), "w")
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  return start


def run_ps_and_two_workers(args, log_dir):
  """Runs train.py `args` as 1 ps + 2 workers on loopback until both workers end; their logs."""
  start = starter(loopback_cluster(), args, log_dir)
  ps = start("ps", 0)
  try:
    workers = [start("worker", 0), start("worker", 1)]
    deadline = time.time() + 240
    for worker in workers:
      worker.wait(timeout=max(1, deadline - time.time()))
    logs = [open(str(log_dir / ("worker%d.log" % i))).read() for i in range(2)]
    assert [w.returncode for w in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  finally:
    ps.kill()
    ps.wait()
  return logs


# -- weights ---------------------------------------------------------------------------------------------
def randomise(sess, variables, rng):
  """Random values everywhere (variances positive) so every parameter matters in the comparison."""
  values = {}
  for var in variables:
    value = rng.randn(*var.shape.as_list()).astype(np.float32) * 0.5
    if var.op.name.endswith("moving_variance"):
      value = np.abs(value) + 0.5
    var.load(value, sess)
    values[var.op.name[len("teacher/"):]] = value
  return values
