"""Faults a user can cause, and what the programs do about them (docs/RELIABILITY.md, one test per row):
divergence, bad records anywhere in a shard, bad flags, two trainers on one train_dir, killed writers."""

import csv
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import eval as eval_lib
import export_model
import inference
import readers
import train
import utils
from helpers import ROOT, frame_record, learnable_videos, make_frame_videos, video_record, write_records
from helpers import train_args
from utils import InputError


@pytest.fixture(scope="module")
def small_run(frame_data, tmp_path_factory):
  """A teacher trained 10 steps, checkpoints at steps 5 and 10."""
  train_dir = tmp_path_factory.mktemp("small_run")
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=10",
                        "--export_model_steps=5"))
  return train_dir


def _all_finite(checkpoint):
  reader = tf.train.load_checkpoint(checkpoint)
  return all(np.isfinite(reader.get_tensor(name)).all() for name, _ in tf.train.list_variables(checkpoint)
             if reader.get_tensor(name).dtype.kind == "f")


def _dead_pid():
  child = subprocess.Popen(["true"])
  child.wait()
  return child.pid


# -- 1. numerical faults ------------------------------------------------------------------------------
@pytest.mark.slow
def test_divergence_stops_without_saving(frame_data, tmp_path, tf_log):
  train_dir = tmp_path / "diverging"
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=5",
                        "--export_model_steps=5"))
  del tf_log[:]
  with pytest.raises(train.Diverged, match=r"training diverged: .* (global step \d+|loss term).*newest "
                                           r"checkpoint: .*model.ckpt-5, the last finite one") as raised:
    train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=300",
                          "--base_learning_rate=1e30", "--log_every_steps=1"))
  latest = tf.train.latest_checkpoint(str(train_dir))
  assert latest.endswith("model.ckpt-5") and _all_finite(latest)
  assert not any("Checkpoint" in line and "written" in line for line in tf_log), "nothing was saved"
  assert "loss term 'ce' is nan at global step" in str(raised.value) or "variables" in str(raised.value)


def test_non_finite_loss_term_is_named():
  assert train._non_finite_term({"ce": 0.5, "rep": np.float32("inf"), "total": np.nan}) == ("rep", np.inf)
  assert train._non_finite_term({"ce": 0.5, "pred": 0.1}) is None


def test_train_batch_metrics_never_crash_on_nan():
  labels = np.eye(8)[:4]
  hit, gap = train._batch_metrics(np.full((4, 8), np.nan, np.float32), labels)
  assert np.isnan(hit) and np.isnan(gap)
  hit, gap = train._batch_metrics(labels * 0.9, labels)
  assert hit == 1.0 and gap == pytest.approx(1.0)


def _poisoned_copy(train_dir, target):
  """A copy of train_dir's latest checkpoint whose classifier weights are NaN (a diverged run)."""
  checkpoint = tf.train.latest_checkpoint(str(train_dir))
  reader = tf.train.load_checkpoint(checkpoint)
  target.mkdir()
  (target / "model_flags.json").write_text((train_dir / "model_flags.json").read_text())
  with tf.Graph().as_default():
    variables = []
    for name, _ in tf.train.list_variables(checkpoint):
      value = reader.get_tensor(name)
      if "classifier" in name and value.dtype.kind == "f":
        value = np.full_like(value, np.nan)
      variables.append(tf.Variable(value, name=name))
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      return tf.train.Saver(variables).save(sess, str(target / "model.ckpt"), global_step=10)


@pytest.mark.slow
def test_eval_inference_export_refuse_a_diverged_checkpoint(small_run, frame_data, tmp_path):
  poisoned = _poisoned_copy(small_run, tmp_path / "nan_run")
  with pytest.raises(InputError, match="nan_run/model.ckpt-10 gives non-finite predictions .* diverged"):
    eval_lib.Evaluator(str(tmp_path / "nan_run"), frame_data["validate"], 64).evaluate(poisoned)
  output = tmp_path / "out.csv"
  with pytest.raises(InputError, match="model.ckpt-10 gives non-finite predictions"):
    inference.main(["inference.py", "--train_dir=" + str(tmp_path / "nan_run"), "--batch_size=64",
                    "--input_data_pattern=" + frame_data["validate"], "--output_file=" + str(output)])
  with pytest.raises(InputError, match="model.ckpt-10 holds non-finite values .*classifier"):
    export_model.export(str(tmp_path / "nan_run"))
  assert sorted(os.listdir(str(tmp_path))) == ["nan_run"], "no CSV, no temporary, no export"
  assert not os.path.exists(str(tmp_path / "nan_run" / "export" / "step_10"))


# -- 2. data checks at every record ---------------------------------------------------------------------
def _read_error(reader, path):
  with tf.Graph().as_default():
    batch, init = reader.input_batch([path], 2, training=False)
    with tf.Session() as sess:
      sess.run(init)
      with pytest.raises(tf.errors.OpError) as raised:
        while True:
          sess.run(batch)
  return readers.explain_data_error(raised.value, [path], reader)


GOOD = make_frame_videos(5, num_classes=10)


def float_frames_record(video_id):
  """A SequenceExample whose 'rgb' frames are float lists instead of byte strings."""
  example = tf.train.SequenceExample.FromString(
      frame_record(video_id, [1], {"rgb": np.zeros((2, 8)), "audio": np.zeros((2, 4))}))
  for frame in example.feature_lists.feature_list["rgb"].feature:
    frame.Clear()
    frame.float_list.value.extend([0.5] * 8)
  return example.SerializeToString()


@pytest.mark.parametrize("bad, expected", [
    (frame_record("neg", [3, -1], {"rgb": np.zeros((2, 8)), "audio": np.zeros((2, 4))}),
     r"label id outside \[0, num_classes=10\) .* in .*s.tfrecord \(video neg, values 3 -1\)"),
    (frame_record("nor", [1], {"audio": np.zeros((2, 4))}),
     r"s.tfrecord \(video nor\): frame feature 'rgb' not found .*the record has \['audio'\]"),
    (frame_record("short", [1], {"rgb": [b"\1" * 8, b"\1" * 5], "audio": np.zeros((2, 4))}),
     r"frame feature 'rgb' has a frame whose byte length is not 8 .* in .*s.tfrecord \(video short\)"),
    (float_frames_record("float"),
     r"s.tfrecord \(video float\): frame feature 'rgb' has no single byte string per frame, expected 8"),
    (b"\x0a\x03\x0a\x01\xff not a SequenceExample",
     r"s.tfrecord: record 5 cannot be parsed as a SequenceExample"),
], ids=["negative_label", "no_rgb", "short_frame", "float_frames", "not_a_record"])  # records serialize
# their maps in no fixed order across processes: ids made from their bytes would differ between workers
def test_a_bad_record_anywhere_in_a_shard_is_named(tmp_path, bad, expected):
  path = write_records(str(tmp_path / "s.tfrecord"), [frame_record(*v) for v in GOOD] + [bad])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4])
  reader.validate_files([path])  # the start-up check sees the first record only
  error = _read_error(reader, path)
  assert isinstance(error, InputError) and "Graph execution error" not in str(error)
  assert "\n" not in str(error)
  assert re.search(expected, str(error)), str(error)


def test_non_finite_video_level_feature_is_named(tmp_path):
  path = write_records(str(tmp_path / "v.tfrecord"),
                       [video_record("ok", [1], {"mean_rgb": np.zeros(4)}),
                        video_record("inf", [1], {"mean_rgb": [0, np.inf, 0, 0]})])
  error = _read_error(readers.YT8MAggregatedFeatureReader(10, ["mean_rgb"], [4]), path)
  assert "not finite" in str(error) and "v.tfrecord (video inf)" in str(error)


def test_a_folder_or_unreadable_file_among_the_inputs(tmp_path):
  good = write_records(str(tmp_path / "train0.tfrecord"), [frame_record(*v) for v in GOOD])
  (tmp_path / "train1.tfrecord").mkdir()
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4])
  with pytest.raises(InputError, match="train1.tfrecord is a folder: expected TFRecord files only"):
    reader.validate_files(readers.resolve_files(str(tmp_path / "train*")))
  if os.geteuid() != 0:  # root reads every file
    os.chmod(good, 0)
    with pytest.raises(InputError, match="train0.tfrecord cannot be read"):
      reader.validate_files([good])


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["no_rgb", "bad_crc"])
def test_data_error_mid_training_says_what_the_checkpoint_covers(tmp_path, fault):
  videos = learnable_videos(120, seed=5)
  records = [frame_record(*v) for v in videos] + [frame_record("broken", [1], {"audio": np.zeros((3, 4))})]
  path = write_records(str(tmp_path / "train0.tfrecord"), records)
  if fault == "bad_crc":
    data = bytearray(open(path, "rb").read())
    data[-10] ^= 0xFF  # inside the last record's data: its CRC no longer matches
    open(path, "wb").write(bytes(data))
  data = {"train": path, "feature_sizes": "16,4", "num_classes": 8}
  train_dir = tmp_path / "run"
  with pytest.raises(InputError) as raised:
    train.main(train_args(data, train_dir, "--model_type=teacher", "--num_epochs=1",
                          "--shuffle_buffer=1", "--num_readers=1"))
  message = str(raised.value)
  expected = ("train0.tfrecord (video broken): frame feature 'rgb' not found" if fault == "no_rgb"
              else "train0.tfrecord is corrupt")
  assert expected in message and "Graph execution error" not in message, message
  latest = tf.train.latest_checkpoint(str(train_dir))
  step = int(latest.rsplit("-", 1)[1])
  assert step >= 5, "the 120 good videos come first: several steps of 16 ran before the bad record"
  assert ("training stopped at global step %d: %s was written and covers only the data read before "
          "this record" % (step, latest)) in message


@pytest.mark.slow
def test_zero_frame_videos_train_with_one_warning_and_a_count(tmp_path, tf_log):
  empty = [("e%d" % i, [i % 8], {"rgb": np.zeros((0, 16)), "audio": np.zeros((0, 4))}) for i in range(40)]
  data = {"train": write_records(str(tmp_path / "empty.tfrecord"), [frame_record(*v) for v in empty]),
          "feature_sizes": "16,4", "num_classes": 8}
  assert train.main(train_args(data, tmp_path / "run", "--model_type=teacher", "--max_steps=4",
                               "--shuffle_buffer=8")) == 4
  warnings = [line for line in tf_log if "videos with 0 frames" in line]
  assert len(warnings) == 1, "said once per run"
  assert any("64 of its 64 videos had 0 frames" in line for line in tf_log)


# -- 3. flags validated before anything is written ---------------------------------------------------------
@pytest.mark.parametrize("flag, expected", [
    ("--batch_size=0", "--batch_size=0: 0 is not a positive integer"),
    ("--k_frame=301", "--k_frame=301: expected at most --max_frames=24"),
    ("--base_learning_rate=-0.1", "--base_learning_rate=-0.1: expected a positive rate"),
    ("--base_learning_rate=nan", "--base_learning_rate=nan: expected a positive rate"),
    ("--learning_rate_decay=1.5", r"--learning_rate_decay=1.5: expected a factor in \(0, 1\]"),
    ("--pred_weight=-1", "--pred_weight=-1.0: expected 0 .off. or a positive number"),
    ("--drop_rate=1", r"--drop_rate=1.0: expected a rate in \[0, 1\)"),
    ("--export_model_steps=0", "--export_model_steps=0: 0 is not a positive integer"),
    ("--shuffle_buffer=0", "--shuffle_buffer=0: 0 is not a positive integer"),
])
def test_bad_flags_are_refused_before_anything_is_written(frame_data, tmp_path, flag, expected):
  train_dir = tmp_path / "never"
  with pytest.raises(InputError, match=expected):
    train.main(train_args(frame_data, train_dir, "--model_type=student", "--k_frame=4", flag))
  assert not train_dir.exists()


def test_a_folder_matching_the_data_pattern_writes_nothing(frame_data, tmp_path):
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "train_sub").mkdir()
  data = dict(frame_data, train=frame_data["train"] + "," + str(tmp_path / "data" / "train*"))
  with pytest.raises(InputError, match="train_sub is a folder"):
    train.main(train_args(data, tmp_path / "never", "--model_type=teacher", "--max_steps=2"))
  assert not (tmp_path / "never").exists()


def test_teacher_default_k_frame_still_means_all_frames(frame_data):
  train.FLAGS.unparse_flags()
  train.FLAGS(train_args(frame_data, "/tmp/unused", "--model_type=teacher"))  # max_frames 24, k 300
  model_flags = train.model_utils.model_flags_from(train.FLAGS.flag_values_dict())
  assert model_flags["k_frame"] == 300 and train.config.frames_read(model_flags) is None


# -- 4. a run owns its train_dir ----------------------------------------------------------------------------
def test_dir_lock_refuses_a_second_owner_and_takes_over_a_dead_ones(tmp_path, tf_log):
  lock = utils.DirLock(str(tmp_path)).acquire()
  with pytest.raises(InputError, match=r"is in use by pid %d on host %s" % (os.getpid(), utils.HOST)):
    utils.DirLock(str(tmp_path)).acquire()
  lock.release()
  assert not (tmp_path / ".lock").exists()
  (tmp_path / ".lock").write_text('{"pid": %d, "host": "%s", "started": "then"}' % (_dead_pid(), utils.HOST))
  utils.DirLock(str(tmp_path)).acquire().release()
  assert any("took over the lock left by pid" in line for line in tf_log)


@pytest.mark.slow
def test_second_trainer_refused_and_a_killed_ones_lock_taken_over(frame_data, tmp_path):
  train_dir = tmp_path / "owned"
  log = tmp_path / "first.log"
  with open(str(log), "w") as out:
    first = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + train_args(
        frame_data, train_dir, "--model_type=teacher", "--max_steps=100000", "--export_model_steps=10")[1:],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
  try:
    deadline = time.time() + 120
    while not (tf.train.latest_checkpoint(str(train_dir)) or time.time() > deadline or first.poll()):
      time.sleep(0.5)
    assert tf.train.latest_checkpoint(str(train_dir)), log.read_text()[-3000:]
    flags_before = (train_dir / "model_flags.json").read_text()
    with pytest.raises(InputError, match="owned is in use by pid %d on host %s .started" % (first.pid, utils.HOST)):
      train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=5"))
    assert (train_dir / "model_flags.json").read_text() == flags_before
  finally:
    first.kill()  # SIGKILL: no cleanup; its .lock stays behind
    first.wait()
  assert (train_dir / ".lock").exists()
  resumed = int(tf.train.latest_checkpoint(str(train_dir)).rsplit("-", 1)[1])
  assert train.main(train_args(frame_data, train_dir, "--model_type=teacher",
                               "--max_steps=%d" % (resumed + 3))) == resumed + 3
  assert not (train_dir / ".lock").exists(), "released at the end"


@pytest.mark.slow
def test_sigterm_stops_training_with_a_checkpoint_and_releases_the_lock(frame_data, tmp_path):
  train_dir = tmp_path / "terminated"
  log = tmp_path / "train.log"
  with open(str(log), "w") as out:
    trainer = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + train_args(
        frame_data, train_dir, "--model_type=teacher", "--max_steps=100000", "--log_every_steps=1")[1:],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
  deadline = time.time() + 120
  while "step 3 |" not in log.read_text() and time.time() < deadline and trainer.poll() is None:
    time.sleep(0.2)
  trainer.terminate()
  assert trainer.wait(timeout=60) == 0, log.read_text()[-3000:]
  text = log.read_text()
  assert re.search(r"Training stopped at global step (\d+) \(SIGTERM\)", text), text[-3000:]
  step = int(re.search(r"Training stopped at global step (\d+)", text).group(1))
  assert tf.train.latest_checkpoint(str(train_dir)).endswith("model.ckpt-%d" % step)
  assert not (train_dir / ".lock").exists()


# -- 6. outputs: no stale temporaries -------------------------------------------------------------------
def test_inference_removes_a_killed_runs_temporary(small_run, frame_data, tmp_path):
  output = tmp_path / "sub.csv"
  stale = tmp_path / ("sub.csv.tmp-%s-%d" % (utils.HOST, _dead_pid()))
  live = tmp_path / ("sub.csv.tmp-%s-%d" % (utils.HOST, os.getppid()))
  other_host = tmp_path / "sub.csv.tmp-elsewhere-1"
  for path in (stale, live, other_host):
    path.write_text("VideoId,LabelConfidencePairs\npartial")
  argv = ["inference.py", "--train_dir=" + str(small_run), "--batch_size=64",
          "--input_data_pattern=" + frame_data["validate"], "--output_file=" + str(output)]
  assert inference.main(argv) == 150
  assert sorted(os.listdir(str(tmp_path))) == sorted(["sub.csv", live.name, other_host.name])
  first = output.read_text()
  assert inference.main(argv) == 150 and output.read_text() == first, "a rerun is idempotent"
  assert len(list(csv.reader(open(str(output))))) == 151


def test_export_removes_a_killed_exports_temporary_folder(small_run, tmp_path):
  export_dir = tmp_path / "exported"
  stale = tmp_path / ("exported.tmp-%s-%d" % (utils.HOST, _dead_pid()))
  (stale / "variables").mkdir(parents=True)
  export_model.export(str(small_run), export_dir=str(export_dir))
  assert sorted(os.listdir(str(tmp_path))) == ["exported"]
  assert (export_dir / "saved_model.pb").exists()


@pytest.mark.slow
def test_sigterm_removes_the_temporary(tmp_path):
  script = ("import os, signal, sys; sys.path.insert(0, %r); import utils\n"
            "def main(argv):\n"
            "  with utils.atomic_output(%r) as tmp:\n"
            "    open(tmp, 'w').write('half')\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    open(tmp, 'a').write('never')\n"
            "utils.run_cli(main, [])\n" % (ROOT, str(tmp_path / "out.csv")))
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
  assert result.returncode == 143 and "error: stopped by SIGTERM" in result.stderr, result.stderr[-2000:]
  assert os.listdir(str(tmp_path)) == []
