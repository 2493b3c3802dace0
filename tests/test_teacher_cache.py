"""Teacher cache: cache_teacher.py writes the frozen teacher's outputs once; KD reads them instead of
running the teacher (train.py --teacher_cache), with the live teacher's loss terms."""

import json
import os
import shutil
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import cache_teacher
import config
import kd_teacher
import model_utils
import readers
import teacher_cache
import train
from helpers import ROOT, run_ps_and_two_workers, train_args
from utils import InputError


@pytest.fixture(scope="module")
def teacher_dir(frame_data, tmp_path_factory):
  train_dir = tmp_path_factory.mktemp("cache_teacher")
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=60"))
  return str(train_dir)


def write_cache(frame_data, teacher_dir, cache_dir, *extra):
  return cache_teacher.main(["cache_teacher.py", "--teacher_checkpoint=" + teacher_dir,
                             "--input_data_pattern=" + frame_data["train"], "--cache_dir=" + str(cache_dir),
                             "--batch_size=50"] + list(extra))


@pytest.fixture(scope="module")
def caches(frame_data, teacher_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("caches")
  for dtype in teacher_cache.DTYPES:
    write_cache(frame_data, teacher_dir, root / dtype, "--cache_dtype=" + dtype)
  return {dtype: str(root / dtype) for dtype in teacher_cache.DTYPES}


def bfloat16_bits(values):
  """The bfloat16 bits of float32 `values` (finite), in NumPy: the upper 16 bits of each float32,
  rounded to nearest, ties to even."""
  bits = np.asarray(values, "<f4").view(np.uint32).astype(np.uint64)
  return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _cache_records(path):
  out = []
  for record in tf.io.tf_record_iterator(path):
    feature = tf.train.Example.FromString(record).features.feature
    out.append((feature["id"].bytes_list.value[0].decode(),
                {name: feature[name].bytes_list.value[0] for name in teacher_cache.OUTPUTS if name in feature}))
  return out


def _teacher_alone(teacher_dir, data_file):
  """The teacher's outputs per video id through the evaluation path (an independent reading)."""
  teacher_flags = config.load_model_flags(teacher_dir)
  with tf.Graph().as_default():
    parts = model_utils.build_evaluation_graph(teacher_flags, [data_file], 64)
    fetch = dict(parts["outputs"], ids=parts["batch"]["video_ids"])
    with tf.Session() as sess:
      parts["saver"].restore(sess, tf.train.latest_checkpoint(teacher_dir))
      sess.run(parts["iterator_init"])
      out = {}
      for values in iter(lambda: _next(sess, fetch), None):
        for row, video_id in enumerate(values["ids"]):
          out[video_id.decode()] = {name: values[name][row] for name in teacher_cache.OUTPUTS}
  return out


def _next(sess, fetch):
  try:
    return sess.run(fetch)
  except tf.errors.OutOfRangeError:
    return None


@pytest.mark.slow
def test_cache_shards_hold_the_teacher_outputs_in_record_order(frame_data, teacher_dir, caches):
  data_files = readers.resolve_files(frame_data["train"])
  manifest = json.load(open(os.path.join(caches["float32"], teacher_cache.MANIFEST_FILE)))
  assert manifest["teacher_checkpoint"] == os.path.abspath(tf.train.latest_checkpoint(teacher_dir))
  assert manifest["global_step"] == 60 and manifest["dtype"] == "float32" and manifest["mixed_precision"] == "none"
  assert manifest["teacher_model_flags"] == config.load_model_flags(teacher_dir)
  assert manifest["sizes"] == {"predictions": 8, "logits": 8, "representation": 32}
  assert {name: s["records"] for name, s in manifest["shards"].items()} == {
      "train0000.tfrecord": 240, "train0001.tfrecord": 240}
  for index, data_file in enumerate(data_files):
    alone = _teacher_alone(teacher_dir, data_file)
    records = {dtype: _cache_records(teacher_cache.shard_path(caches[dtype], data_file)) for dtype in caches}
    expected_ids = [v[0] for v in frame_data["train_videos"][240 * index:240 * (index + 1)]]
    assert [video_id for video_id, _ in records["float32"]] == expected_ids
    assert [video_id for video_id, _ in records["float16"]] == expected_ids
    assert [video_id for video_id, _ in records["bfloat16"]] == expected_ids
    for (video_id, full), (_, half), (_, brain) in zip(records["float32"], records["float16"], records["bfloat16"]):
      for name in teacher_cache.OUTPUTS:
        values = np.frombuffer(full[name], "<f4")
        # float32 sums in another batch composition round differently (seen: 2e-6 on a logit of 1.05).
        np.testing.assert_allclose(values, alone[video_id][name], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.frombuffer(half[name], "<f2"), values.astype(np.float16))
        np.testing.assert_array_equal(np.frombuffer(brain[name], "<u2"), bfloat16_bits(values))
  sizes = [os.path.getsize(teacher_cache.shard_path(caches[d], data_files[0])) for d in ("float32", "float16")]
  assert sizes[0] - sizes[1] >= 240 * 2 * (8 + 8 + 32), "float16 halves every stored vector"


@pytest.mark.slow
def test_cache_writer_resumes_shard_by_shard_and_refuses_other_settings(frame_data, teacher_dir, caches,
                                                                        tmp_path, caplog):
  cache_dir = str(tmp_path / "resume")
  shutil.copytree(caches["float32"], cache_dir)
  shards = [os.path.join(cache_dir, "train000%d.tfrecord" % i) for i in range(2)]
  before = [open(path, "rb").read() for path in shards]
  os.remove(shards[1])  # as if stopped while writing the second shard
  stamp = os.stat(shards[0]).st_mtime_ns
  time.sleep(0.01)
  with caplog.at_level("INFO"):
    write_cache(frame_data, teacher_dir, cache_dir)
  assert "over 1 of 2 shard(s), 240 videos" in caplog.text and "ETA" in caplog.text
  assert os.stat(shards[0]).st_mtime_ns == stamp, "a finished shard is not written again"
  assert [open(path, "rb").read() for path in shards] == before
  assert not [name for name in os.listdir(cache_dir) if name.endswith(".tmp")]
  # A cache written before a model flag existed lacks its key: the flag's earlier value stands for it.
  manifest = json.load(open(teacher_cache.manifest_path(cache_dir)))
  del manifest["teacher_model_flags"]["moe_prob_gating"]
  json.dump(manifest, open(teacher_cache.manifest_path(cache_dir), "w"))
  write_cache(frame_data, teacher_dir, cache_dir)
  assert teacher_cache.TeacherCache(cache_dir, "--teacher_cache").teacher_flags["moe_prob_gating"] is False
  with pytest.raises(InputError, match="--cache_dir=.*resume holds a cache made otherwise: dtype float16 "
                                       r"\(cache has float32\); use another --cache_dir"):
    write_cache(frame_data, teacher_dir, cache_dir, "--cache_dtype=float16")
  with pytest.raises(InputError, match=r"--cache_dtype=float64: value should be one of <float32\|float16\|bfloat16>"):
    write_cache(frame_data, teacher_dir, cache_dir, "--cache_dtype=float64")
  student = tmp_path / "k_frame_teacher"
  shutil.copytree(teacher_dir, str(student))
  config.write_model_flags(str(student), dict(config.load_model_flags(teacher_dir), k_frame=4))
  with pytest.raises(InputError, match="reads 4 frames: a cache holds a teacher that reads all frames"):
    write_cache(frame_data, str(student), tmp_path / "never")
  assert not os.path.exists(str(tmp_path / "never"))


def _one_batch(frame_data, student_flags, cache, size=16):
  reader = model_utils.make_reader(student_flags, also_full_frames=True)
  files = readers.resolve_files(frame_data["train"])
  with tf.Graph().as_default():
    batch, init = reader.input_batch(files, size, training=False, teacher_cache=cache)
    with tf.Session() as sess:
      sess.run(init)
      return sess.run(batch)


def _kd_terms(student_flags, teacher_flags, batch, teacher_checkpoint=None, student_values=None,
              pred_loss="mse"):
  """Loss terms of a two-tower KD graph on `batch` (live teacher if `teacher_checkpoint`)."""
  train.FLAGS.unparse_flags()
  train.FLAGS(["train.py", "--batch_size=%d" % (len(batch["labels"]) // 2), "--pred_loss=" + pred_loss,
               "--temperature=2"])
  with tf.Graph().as_default():
    tensors = {name: tf.constant(value) for name, value in batch.items() if name != "video_ids"}
    teacher = kd_teacher.Teacher(teacher_checkpoint, teacher_flags, None)
    fetch = train.build_training_graph(student_flags, train.FLAGS, tensors, ["/cpu:0", "/cpu:0"], teacher)
    student = model_utils.scope_variables("student")
    with tf.Session() as sess:
      sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
      if teacher_checkpoint:
        kd_teacher.savers(teacher, False)[0].restore(sess, teacher_checkpoint)
      if student_values is None:
        student_values = {v.op.name: sess.run(v) for v in student}
      for v in student:
        v.load(student_values[v.op.name], sess)
      losses, teacher = sess.run([fetch["losses"], fetch["teacher_predictions"]])
  return losses, teacher, student_values


@pytest.mark.slow
@pytest.mark.parametrize("pred_loss", ["mse", "kl"])
def test_float32_cache_gives_the_live_teacher_kd_terms(frame_data, teacher_dir, caches, pred_loss):
  teacher_flags = config.load_model_flags(teacher_dir)
  # No dropout in the student, so that the two graphs' students compute the same function.
  student_flags = dict(teacher_flags, model_type="kd", k_frame=4, drop_rate=0.0)
  checkpoint = tf.train.latest_checkpoint(teacher_dir)
  # float16 rounding is checked on the squared errors; the KL checks the cached logits in float32.
  dtypes = sorted(caches) if pred_loss == "mse" else ["float32"]
  batches = {dtype: _one_batch(frame_data, student_flags, teacher_cache.TeacherCache(caches[dtype]))
             for dtype in dtypes}
  live_batch = {name: batches["float32"][name] for name in ("video_matrix", "num_frames", "labels")}
  live_batch.update(teacher_matrix=batches["float32"]["full_video_matrix"],
                    teacher_num_frames=batches["float32"]["full_num_frames"])
  live, live_teacher, student_values = _kd_terms(student_flags, teacher_flags, live_batch, checkpoint,
                                                 pred_loss=pred_loss)
  results = {}
  for dtype, batch in batches.items():
    cached = {name: value for name, value in batch.items() if not name.startswith("full_")}
    results[dtype] = _kd_terms(student_flags, teacher_flags, cached, student_values=student_values,
                               pred_loss=pred_loss)
  assert sorted(live) == ["ce", "pred", "rep", "total"]   # the seed's KD loss: no L2 term
  np.testing.assert_allclose(results["float32"][1], live_teacher, rtol=1e-6, atol=1e-6)
  for name, value in live.items():
    assert abs(results["float32"][0][name] - value) <= 1e-6 * max(1.0, abs(value)), (name, value)
  if "float16" in results:
    for name, value in live.items():
      # float16 rounds each stored value by at most 2^-11 relative: the terms move by far less than 1%.
      assert results["float16"][0][name] == pytest.approx(value, rel=1e-3), (name, value)
    assert results["float16"][0]["rep"] != results["float32"][0]["rep"], "the float16 cache is really float16"


def _prepare(argv):
  train.FLAGS.unparse_flags()
  train.FLAGS(argv)
  return train.prepare(train.FLAGS)


@pytest.mark.slow
def test_kd_from_cache_builds_no_teacher_and_reads_k_frames(frame_data, teacher_dir, caches, tmp_path):
  train_dir = tmp_path / "cached_kd"
  run = _prepare(train_args(frame_data, train_dir, "--model_type=kd", "--k_frame=4",
                            "--teacher_cache=" + caches["float32"], "--max_steps=6"))
  with run.parts.graph.as_default():
    names = [v.op.name for v in tf.global_variables() + tf.local_variables()]
    assert names and not [n for n in names if "teacher" in n]
    inputs = [op for op in run.parts.graph.get_operations() if op.type == "IteratorGetNext"]
    shapes = sorted(tuple(t.shape.as_list()) for op in inputs for t in op.outputs)
  assert (16, 4, 20) in shapes and not [s for s in shapes if len(s) == 3 and s[1] != 4], \
      "the only frames read are the student's 4"
  assert (16, 32) in shapes and shapes.count((16, 8)) == 3, "labels, cached predictions and logits"
  assert train.train_loop(run) == 6
  run.sess.close()
  recorded = json.load(open(str(train_dir / kd_teacher.RECORD_FILE)))
  teacher_checkpoint = os.path.abspath(tf.train.latest_checkpoint(teacher_dir))
  assert recorded == {"teacher_checkpoint": teacher_checkpoint, "restored_checkpoint": teacher_checkpoint,
                      "precise_bn": None, "teacher_cache": caches["float32"]}
  # Both flags, and a student started from the teacher's weights: the cache names that checkpoint.
  run = _prepare(train_args(frame_data, tmp_path / "init", "--model_type=kd", "--k_frame=4",
                            "--teacher_cache=" + caches["float16"], "--teacher_checkpoint=" + teacher_dir,
                            "--student_init_from_teacher", "--max_steps=1"))
  teacher = tf.train.load_checkpoint(tf.train.latest_checkpoint(teacher_dir))
  with run.parts.graph.as_default():
    student = {v.op.name: run.sess.run(v) for v in model_utils.scope_variables("student")}
  run.sess.close()
  assert student and all(np.array_equal(value, teacher.get_tensor("teacher" + name[len("student"):]))
                         for name, value in student.items())


@pytest.mark.slow
def test_cache_refusals_are_one_line_errors_before_training(frame_data, teacher_dir, caches, tmp_path):
  kd = lambda cache, *extra: train.main(train_args(
      frame_data, tmp_path / "bad", "--model_type=kd", "--k_frame=4", "--teacher_cache=" + str(cache),
      "--max_steps=2", *extra))
  with pytest.raises(InputError, match="with --kd_mode=parallel: .* it serves --kd_mode=serial only"):
    kd(caches["float32"], "--kd_mode=parallel")
  with pytest.raises(InputError, match="--teacher_cache is for --model_type=kd"):
    train.main(train_args(frame_data, tmp_path / "bad", "--model_type=student", "--k_frame=4",
                          "--teacher_cache=" + caches["float32"], "--max_steps=2"))
  with pytest.raises(InputError, match="--teacher_cache=.*holds no manifest.json"):
    kd(tmp_path)
  other_teacher = str(tmp_path / "other_teacher")
  shutil.copytree(teacher_dir, other_teacher)
  with pytest.raises(InputError, match="written from another teacher than --teacher_checkpoint=.*other_teacher"):
    kd(caches["float32"], "--teacher_checkpoint=" + other_teacher)

  def altered(name, change):
    cache_dir = tmp_path / name
    shutil.copytree(caches["float32"], str(cache_dir))
    change(cache_dir)
    return cache_dir

  def other_flags(cache_dir):
    manifest = json.load(open(str(cache_dir / "manifest.json")))
    manifest["teacher_model_flags"]["drop_rate"] = 0.125
    json.dump(manifest, open(str(cache_dir / "manifest.json"), "w"))
  with pytest.raises(InputError, match="recorded teacher flags that differ from .*model_flags.json: "
                                       "drop_rate=0.2 \\(cache has 0.125\\)"):
    kd(altered("flags", other_flags), "--teacher_checkpoint=" + teacher_dir)
  with pytest.raises(InputError, match="has no cache shard for .*train0001.tfrecord .*run cache_teacher.py"):
    kd(altered("missing", lambda d: os.remove(str(d / "train0001.tfrecord"))))

  def drop_last_record(cache_dir):
    path = str(cache_dir / "train0001.tfrecord")
    records = list(tf.io.tf_record_iterator(path))[:-1]
    with tf.io.TFRecordWriter(path) as writer:
      for record in records:
        writer.write(record)
  with pytest.raises(InputError, match="the cache shard .*train0001.tfrecord has 239 records, .* manifest "
                                       "says 240 for train0001.tfrecord"):
    kd(altered("short", drop_last_record))
  no_logits = tmp_path / "no_logits"
  write_cache(frame_data, teacher_dir, no_logits, "--cache_logits=False")
  with pytest.raises(InputError, match="--pred_loss=kl needs the teacher's logits: .*--cache_logits=False"):
    kd(no_logits, "--pred_loss=kl")
  assert not os.path.exists(str(tmp_path / "bad" / "checkpoint")), "failed before any training"

  def swap_shards(cache_dir):  # same record counts, other videos
    first, second = str(cache_dir / "train0000.tfrecord"), str(cache_dir / "train0001.tfrecord")
    os.rename(first, first + ".x")
    os.rename(second, first)
    os.rename(first + ".x", second)
  with pytest.raises(InputError, match=r"teacher cache record has another video id than the data record "
                                       r"\(expected the cache shard written from this shard, record for "
                                       r"record\) in .*train000[01].tfrecord \(video t\d+, values t\d+\)"):
    kd(altered("swapped", swap_shards))


@pytest.mark.slow
def test_distributed_workers_read_the_cache(frame_data, caches, tmp_path):
  train_dir = tmp_path / "dist_cached_kd"
  args = [sys.executable, os.path.join(ROOT, "train.py")] + train_args(
      frame_data, train_dir, "--model_type=kd", "--k_frame=4", "--teacher_cache=" + caches["float16"],
      "--max_steps=60", "--log_every_steps=1")[1:]   # every worker logs its loss terms
  logs = run_ps_and_two_workers(args, tmp_path)
  for log in logs:
    assert "Teacher outputs read from --teacher_cache=" in log and " pred " in log and " rep " in log
    assert int(log.split("Training stopped at global step")[1].split("; ")[1].split(" steps")[0]) > 0
  checkpoint = tf.train.latest_checkpoint(str(train_dir))
  assert int(checkpoint.rsplit("-", 1)[1]) >= 60
  assert not [n for n, _ in tf.train.list_variables(checkpoint) if "teacher" in n]
