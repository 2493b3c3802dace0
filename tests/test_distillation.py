"""Distillation that needs no hand-tuning: precise batch-norm statistics (precise_bn.py) against a NumPy
transcription (the population mean and variance of every layer's batch statistics over N batches, with
the frozen weights of a checkpoint), their use by the KD teacher and the cache, and the warnings given
before training (an unconverged frozen teacher, strided students reading padding)."""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import cache_teacher
import config
import frame_level_models
import import_checkpoint
import kd_teacher
import model_utils
import precise_bn
import readers
import seed_numpy
import train
from helpers import model_flags, randomise, run_ok, train_args
from utils import InputError

FLAGS = dict(feature_sizes="16,4", num_classes=8, max_frames=24, groups=2, nextvlad_cluster_size=4,
             nextvlad_hidden_size=8, expansion=2, gating_reduction=2, drop_rate=0.4)


def _random_teacher(train_dir):
  """A teacher run with random weights (moving statistics random too), saved like train.py's."""
  flags = model_flags(**FLAGS)
  with tf.Graph().as_default():
    frames = tf.placeholder(tf.float32, [None, None, 20])
    model_utils.build_model(flags, frames, tf.placeholder(tf.int32, [None]), is_training=False)
    global_step = tf.train.get_or_create_global_step()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      values = randomise(sess, model_utils.scope_variables("teacher"), np.random.RandomState(0))
      global_step.load(625, sess)
      tf.train.Saver().save(sess, os.path.join(str(train_dir), "model.ckpt"), global_step=625)
  config.write_model_flags(str(train_dir), flags)
  return flags, values


def test_population_statistics_formula():
  means = np.array([[0.0, 1.0], [2.0, 3.0]])
  variances = np.array([[1.0, 4.0], [3.0, 0.0]])
  mean, variance = precise_bn.population_statistics(means, variances)
  np.testing.assert_allclose(mean, [1.0, 2.0])
  np.testing.assert_allclose(variance, [2.0 + 1.0, 2.0 + 1.0])   # mean of variances + variance of means


def test_recomputed_statistics_match_numpy(frame_data, tmp_path):
  flags, values = _random_teacher(tmp_path / "teacher")
  checkpoint = tf.train.latest_checkpoint(str(tmp_path / "teacher"))
  path = precise_bn.recompute(checkpoint, frame_data["train"], batches=5, output_dir=str(tmp_path / "precise"),
                              batch_size=96, num_readers=1, shuffle=False)
  assert path.endswith("model.ckpt-625")
  # The same deterministic pass, read as data; the statistics computed by the NumPy transcription.
  with tf.Graph().as_default():
    batch, init = model_utils.make_reader(flags).input_batch(
        [str(frame_data["root"] / name) for name in ("train0000.tfrecord", "train0001.tfrecord")], 96,
        training=False, num_readers=1)
    with tf.Session() as sess:
      sess.run(init)
      batches = [sess.run(batch) for _ in range(5)]
  weights = {import_checkpoint.seed_name(name): value.astype(np.float64) for name, value in values.items()}
  eigenvals = frame_level_models.load_eigenvals("", 16).astype(np.float64)
  per_layer = {}
  for b in batches:
    stats = {}
    seed_numpy.nextvlad_model(seed_numpy.whiten(b["video_matrix"].astype(np.float64), eigenvals, 16),
                              b["num_frames"], weights, rgb_size=16, cluster_size=4, groups=2, expansion=2,
                              training=True, stats=stats)
    for scope, (mean, variance, _) in stats.items():
      per_layer.setdefault(scope, []).append((mean, variance))
  reader = tf.train.load_checkpoint(path)
  names = {import_checkpoint.seed_name(name[len("teacher/"):]): name
           for name, _ in tf.train.list_variables(path) if name.startswith("teacher/")}
  assert len(per_layer) == 6
  for scope, pairs in per_layer.items():
    means = np.array([m for m, _ in pairs])
    variances = np.array([v for _, v in pairs])
    expected_mean = means.mean(axis=0)
    expected_variance = variances.mean(axis=0) + means.var(axis=0)
    np.testing.assert_allclose(reader.get_tensor(names[scope + "/moving_mean"]), expected_mean,
                               rtol=1e-4, atol=1e-5, err_msg=scope)
    np.testing.assert_allclose(reader.get_tensor(names[scope + "/moving_variance"]), expected_variance,
                               rtol=1e-4, atol=1e-5, err_msg=scope)
  # The weights are the checkpoint's, untouched.
  np.testing.assert_array_equal(reader.get_tensor(names["hidden1_weights"]), values["hidden/weights"])
  record = json.load(open(str(tmp_path / "precise" / precise_bn.RECORD_FILE)))
  assert record["batches"] == record["batches_read"] == 5 and record["layers"] == 6
  # Reused when asked again the same way; refused when asked otherwise.
  assert precise_bn.recompute(checkpoint, frame_data["train"], 5, str(tmp_path / "precise"), 96,
                              num_readers=1, shuffle=False) == path
  with pytest.raises(InputError, match="made otherwise"):
    precise_bn.recompute(checkpoint, frame_data["train"], 7, str(tmp_path / "precise"), 96)


def test_records_name_local_paths_absolutely(tmp_path, monkeypatch):
  """A rerun that spells the same checkpoint and data otherwise (relative, absolute) reuses the
  statistics; a record written before the paths were made absolute still matches."""
  monkeypatch.chdir(tmp_path)
  relative = precise_bn.record("teacher/model.ckpt-1", "data/train*.tfrecord", 5, 32, 0)
  absolute = precise_bn.record(str(tmp_path / "teacher" / "model.ckpt-1"), str(tmp_path / "data" / "train*.tfrecord"),
                               5, 32, 0)
  assert relative == absolute and absolute["data_pattern"] == str(tmp_path / "data" / "train*.tfrecord")
  assert precise_bn.is_record_of(dict(absolute, data_pattern="data/train*.tfrecord"), absolute)
  assert not precise_bn.is_record_of(dict(absolute, data_pattern="other/train*.tfrecord"), absolute)
  assert precise_bn.record("x", "gs://bucket/train*", 5, 32, 0)["data_pattern"] == "gs://bucket/train*"


def test_shuffled_statistics_are_reproducible(frame_data, tmp_path):
  """The shuffled, parallel read of the recomputation gives the same statistics every time (a cache of
  part of the data and one of all of it hold the same teacher)."""
  _random_teacher(tmp_path / "teacher")
  checkpoint = tf.train.latest_checkpoint(str(tmp_path / "teacher"))
  paths = [precise_bn.recompute(checkpoint, frame_data["train"], batches=6, batch_size=32, num_readers=4,
                                output_dir=str(tmp_path / name)) for name in ("once", "twice")]
  first, second = (tf.train.load_checkpoint(path) for path in paths)
  moving = [name for name, _ in tf.train.list_variables(paths[0]) if "/moving_" in name]
  assert len(moving) == 12
  for name in moving:
    np.testing.assert_array_equal(first.get_tensor(name), second.get_tensor(name), err_msg=name)


@pytest.mark.slow
def test_kd_teacher_and_cache_use_it_and_record_it(frame_data, tmp_path, tf_log):
  """train.py --model_type=kd --precise_bn_batches recomputes the teacher's statistics into
  train_dir/teacher_precise_bn and records it in kd_teacher.json; without it, a 625-step teacher at
  decay 0.999 gets the warning; cache_teacher.py records it in the manifest; the script runs as its
  docstring shows."""
  _random_teacher(tmp_path / "teacher")
  kd_dir = tmp_path / "kd"
  train.main(train_args(frame_data, kd_dir, "--model_type=kd", "--k_frame=4", "--max_steps=2",
                        "--teacher_checkpoint=%s" % (tmp_path / "teacher"), "--precise_bn_batches=3",
                        *["--%s=%s" % (k, v) for k, v in FLAGS.items() if k != "feature_sizes"]))
  recorded = json.load(open(str(kd_dir / kd_teacher.RECORD_FILE)))
  assert recorded["precise_bn"]["batches"] == 3
  assert recorded["teacher_checkpoint"].endswith(os.path.join("teacher", "model.ckpt-625"))
  assert recorded["restored_checkpoint"].startswith(str(kd_dir / kd_teacher.PRECISE_BN_DIR))
  train.main(train_args(frame_data, tmp_path / "kd_plain", "--model_type=kd", "--k_frame=4",
                        "--max_steps=1", "--teacher_checkpoint=%s" % (tmp_path / "teacher"),
                        *["--%s=%s" % (k, v) for k, v in FLAGS.items() if k != "feature_sizes"]))
  assert any("hold 54% of their initial values (--batchnorm_decay=0.999, 625 steps)" in line
             for line in tf_log), tf_log[-5:]
  run_ok("cache_teacher.py", "--teacher_checkpoint=%s" % (tmp_path / "teacher"),
         "--input_data_pattern=" + frame_data["train"], "--cache_dir=%s" % (tmp_path / "cache"),
         "--precise_bn_batches=2")
  manifest = json.load(open(str(tmp_path / "cache" / "manifest.json")))
  assert manifest["precise_bn"]["batches"] == 2
  # The finished cache resumes from another spelling of the same paths (relative, from its folder).
  cwd = os.getcwd()
  os.chdir(str(tmp_path))
  try:
    cache_teacher.main(["cache_teacher.py", "--teacher_checkpoint=teacher", "--cache_dir=cache",
                        "--input_data_pattern=" + os.path.relpath(frame_data["train"]), "--precise_bn_batches=2"])
  finally:
    os.chdir(cwd)
  with pytest.raises(InputError, match="--precise_bn_batches=3 but --teacher_cache=.* was written with "
                                       "precise statistics from 2 batches"):
    train.main(train_args(frame_data, tmp_path / "kd_cached", "--model_type=kd", "--k_frame=4",
                          "--max_steps=1", "--teacher_cache=%s" % (tmp_path / "cache"),
                          "--precise_bn_batches=3",
                          *["--%s=%s" % (k, v) for k, v in FLAGS.items() if k != "feature_sizes"]))
  run_ok("precise_bn.py", "--teacher_checkpoint=%s" % (tmp_path / "teacher"),
         "--input_data_pattern=" + frame_data["train"], "--output_dir=%s" % (tmp_path / "script"),
         "--precise_bn_batches=2", "--batch_size=16")
  assert tf.train.latest_checkpoint(str(tmp_path / "script")).endswith("model.ckpt-625")


def test_strided_padding_share_and_video_lengths(frame_data):
  assert readers.strided_padding_share([300, 250, 251, 40], 6, 300) == (0.5, 250)
  lengths = readers.video_lengths(sorted(__import__("glob").glob(frame_data["train"])), "rgb", limit=300)
  expected = [len(v[2]["rgb"]) for v in frame_data["train_videos"][:300]]
  assert lengths == expected


@pytest.mark.slow
def test_strided_student_on_short_videos_is_warned_about(frame_data, tmp_path, tf_log):
  """frame_data's videos have 4-24 frames: at k=4 strided positions 0, 6, 12, 18 most read padding."""
  train.main(train_args(frame_data, tmp_path / "strided", "--model_type=student", "--k_frame=4",
                        "--frame_sampling=strided", "--max_steps=1"))
  warned = [line for line in tf_log if "--frame_sampling=strided reads positions 0:24:6, up to frame 18" in line]
  assert len(warned) == 1 and "training videos sampled are shorter" in warned[0], tf_log[-5:]
  tf_log.clear()
  train.main(train_args(frame_data, tmp_path / "uniform", "--model_type=student", "--k_frame=4",
                        "--frame_sampling=uniform", "--max_steps=1"))
  assert not [line for line in tf_log if "frame_sampling=strided" in line]
