"""Training, evaluation, inference and export on tiny generated frame-level data."""

import argparse
import csv
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import config
import eval as eval_lib
import eval_util
import export_model
import inference
import train
from helpers import ROOT, model_flags, train_args
from utils import InputError

def evaluate(train_dir, data, batch_size=64):
  evaluator = eval_lib.Evaluator(str(train_dir), data["validate"], batch_size=batch_size)
  return evaluator.evaluate(tf.train.latest_checkpoint(str(train_dir)))


@pytest.fixture(scope="module")
def teacher_dir(frame_data, tmp_path_factory):
  train_dir = tmp_path_factory.mktemp("teacher")
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=150"))
  return train_dir


@pytest.mark.slow
def test_teacher_learns_beyond_class_prior(teacher_dir, frame_data):
  result = evaluate(teacher_dir, frame_data)
  train_labels = np.zeros((len(frame_data["train_videos"]), 8))
  for row, (_, labels, _) in enumerate(frame_data["train_videos"]):
    train_labels[row, labels] = 1
  val_labels = np.zeros((len(frame_data["validate_videos"]), 8))
  for row, (_, labels, _) in enumerate(frame_data["validate_videos"]):
    val_labels[row, labels] = 1
  prior = np.tile(train_labels.mean(0), (len(val_labels), 1))
  prior_gap = eval_util.calculate_gap(prior, val_labels)
  assert result["num_videos"] == 150 and result["global_step"] == 150
  assert result["gap"] > prior_gap + 0.2, (result["gap"], prior_gap)
  saved = config.load_model_flags(str(teacher_dir))
  assert saved["model_type"] == "teacher" and saved["feature_sizes"] == [16, 4]


@pytest.mark.slow
def test_eval_outputs(teacher_dir, frame_data):
  eval_lib.main(["eval.py", "--train_dir=" + str(teacher_dir), "--eval_data_pattern=" + frame_data["validate"],
                 "--batch_size=64", "--run_once", "--feature_sizes=16,4"])
  eval_dir = teacher_dir / "eval"
  metrics = json.load(open(eval_dir / "metrics.json"))
  assert set(metrics) >= {"global_step", "num_videos", "gap", "map", "hit_at_one", "perr", "loss"}
  assert metrics["num_videos"] == 150, "every video once, the last partial batch (150 = 2*64 + 22) too"
  assert json.load(open(eval_dir / "metrics-150.json"))["gap"] == metrics["gap"]
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(eval_dir))


@pytest.mark.slow
def test_resume_continues_global_step(frame_data, tmp_path):
  train_dir = tmp_path / "run"
  assert train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=10")) == 10
  assert train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_step=25")) == 25
  assert tf.train.latest_checkpoint(str(train_dir)).endswith("model.ckpt-25")
  with pytest.raises(InputError, match="--groups=4 .checkpoint has 2."):
    train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=30", "--groups=4"))
  with pytest.raises(InputError, match="already holds .*model.ckpt-25.*nothing is deleted"):
    train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=30",
                          "--start_new_model=True"))
  assert tf.train.latest_checkpoint(str(train_dir)).endswith("model.ckpt-25"), "nothing was lost"


@pytest.mark.parametrize("sampling", ["uniform", "random", "first", "middle", "last",
                                      "first_middle_last", "strided"])
@pytest.mark.slow
def test_student_each_sampling_trains_and_evaluates(frame_data, tmp_path, sampling):
  train_dir = tmp_path / sampling
  train.main(train_args(frame_data, train_dir, "--model_type=student", "--k_frame=4",
                        "--frame_sampling=" + sampling, "--max_steps=5"))
  result = evaluate(train_dir, frame_data)
  assert result["num_videos"] == 150 and 0.0 < result["gap"] <= 1.0
  names = [name for name, _ in tf.train.list_variables(str(train_dir))]
  assert any(n.startswith("student/") for n in names) and not any(n.startswith("teacher/") for n in names)


def argparse_namespace(**values):
  return argparse.Namespace(kd_mode="serial", **values)


def test_two_towers_average_to_one_tower_gradients():
  """Two CPU towers on halves of a batch give the mean of their gradients = one tower on the whole
  batch (a model without batch norm, whose statistics depend on the split by design)."""
  rng = np.random.RandomState(0)
  batch_np = {"video_matrix": rng.randn(8, 5, 6).astype(np.float32),
              "num_frames": np.array([5, 3, 1, 4, 5, 2, 5, 5], np.int32),
              "labels": (rng.rand(8, 4) < 0.3).astype(np.float32)}
  flags = model_flags(model="FrameLevelLogisticModel", feature_sizes="4,2", num_classes=4, max_frames=5,
                      k_frame=5, l2_penalty=1e-3, input_preprocessing="l2", drop_rate=0.0)
  opts = argparse_namespace(batch_size=8, base_learning_rate=0.1, learning_rate_decay=0.9,
                            learning_rate_decay_examples=1e6, clip_gradient_norm=0.0,
                            gradient_clipping="per_variable", regularization_penalty=1.0)
  gradients = []
  for devices, per_tower in ((["/cpu:0"], 8), (["/cpu:0", "/cpu:0"], 4)):
    with tf.Graph().as_default():
      opts.batch_size = per_tower
      batch = {k: tf.constant(v) for k, v in batch_np.items()}
      fetch = train.build_training_graph(flags, opts, batch, devices)
      variables = sorted(tf.trainable_variables(), key=lambda v: v.op.name)
      with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for var in variables:  # identical starting point in both graphs
          var.load(np.random.RandomState(len(var.op.name)).randn(*var.shape.as_list()) * 0.1, sess)
        grads = sess.run({v.op.name: g for g, v in fetch["gradients"]})
    gradients.append(grads)
  assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) >= 2
  for name in gradients[0]:
    np.testing.assert_allclose(gradients[0][name], gradients[1][name], rtol=1e-5, atol=1e-6)


def test_inference_csv(teacher_dir, frame_data, tmp_path):
  output = tmp_path / "sub" / "predictions.csv"
  count = inference.main(["inference.py", "--train_dir=" + str(teacher_dir), "--batch_size=64",
                          "--input_data_pattern=" + frame_data["validate"], "--output_file=" + str(output),
                          "--top_k=5"])
  rows = list(csv.reader(open(output)))
  assert count == 150 and rows[0] == ["VideoId", "LabelConfidencePairs"] and len(rows) == 151
  assert sorted(r[0] for r in rows[1:]) == sorted(v[0] for v in frame_data["validate_videos"])
  for _, pairs in rows[1:]:
    fields = pairs.split(" ")
    classes, scores = [int(c) for c in fields[0::2]], [float(s) for s in fields[1::2]]
    assert len(classes) == 5 and len(set(classes)) == 5 and all(0 <= c < 8 for c in classes)
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
  assert not os.path.exists(str(output) + ".tmp")


@pytest.mark.slow
def test_export_round_trip_in_fresh_process(teacher_dir, frame_data, tmp_path):
  export_dir = export_model.export(str(teacher_dir), export_dir=str(tmp_path / "export"), top_k=8)
  with pytest.raises(InputError, match="already exists"):
    export_model.export(str(teacher_dir), export_dir=export_dir)
  checkpoint_csv, saved_csv = tmp_path / "ckpt.csv", tmp_path / "saved.csv"
  inference.main(["inference.py", "--train_dir=" + str(teacher_dir), "--top_k=8", "--batch_size=64",
                  "--input_data_pattern=" + frame_data["validate"], "--output_file=" + str(checkpoint_csv)])
  subprocess.run([sys.executable, os.path.join(ROOT, "inference.py"), "--saved_model_dir=" + export_dir,
                  "--input_data_pattern=" + frame_data["validate"], "--output_file=" + str(saved_csv),
                  "--top_k=8", "--batch_size=50"], check=True, cwd=ROOT, capture_output=True)
  def load(path):
    return {row[0]: [float(x) for x in row[1].split(" ")] for row in list(csv.reader(open(path)))[1:]}
  a, b = load(checkpoint_csv), load(saved_csv)
  assert a.keys() == b.keys() and len(a) == 150
  for video in a:
    assert a[video][0::2] == b[video][0::2], "same classes in the same order"
    np.testing.assert_allclose(a[video][1::2], b[video][1::2], atol=1e-5)
  saved_vars = [n for n, _ in tf.train.list_variables(os.path.join(export_dir, "variables", "variables"))]
  assert any("moving_mean" in n for n in saved_vars), "batch-norm moving statistics are exported"


def test_export_reads_the_step_from_the_checkpoint(teacher_dir, tmp_path):
  latest = tf.train.latest_checkpoint(str(teacher_dir))
  for path in glob.glob(latest + ".*"):
    shutil.copy(path, str(tmp_path / ("best" + path[len(latest):])))
  export_dir = export_model.export(str(teacher_dir), checkpoint_file=str(tmp_path / "best"))
  assert export_dir == os.path.join(str(teacher_dir), "export", "step_" + latest.rsplit("-", 1)[1])
  assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))


def test_inference_leaves_no_partial_csv(teacher_dir, frame_data, tmp_path):
  untrained = tmp_path / "untrained"  # model_flags.json but no checkpoint: fails once the CSV is open
  untrained.mkdir()
  config.write_model_flags(str(untrained), config.load_model_flags(str(teacher_dir)))
  output = tmp_path / "out.csv"
  with pytest.raises(InputError, match="holds no checkpoint"):
    inference.main(["inference.py", "--train_dir=" + str(untrained), "--output_file=" + str(output),
                    "--input_data_pattern=" + frame_data["validate"]])
  assert os.listdir(str(tmp_path)) == ["untrained"]


@pytest.mark.slow
def test_cli_bad_input_is_one_line(frame_data, tmp_path):
  result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                           "--train_data_pattern=" + str(tmp_path / "none*.tfrecord"),
                           "--train_dir=" + str(tmp_path / "t")], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: --train_data_pattern=")
  assert "matches no file" in result.stderr and "Traceback" not in result.stderr
  result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--model_type=tutor",
                           "--train_data_pattern=" + frame_data["train"], "--train_dir=" + str(tmp_path / "t")],
                          cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 2 and "error: flag --model_type=tutor: value should be one of <teacher|student|kd>" in result.stderr


@pytest.mark.slow
def test_eval_watch_mode_evaluates_each_checkpoint_once(frame_data, tmp_path):
  train_dir = tmp_path / "watched"
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=10",
                        "--export_model_steps=5"))
  argv = ["eval.py", "--train_dir=" + str(train_dir), "--eval_data_pattern=" + frame_data["validate"],
          "--batch_size=64", "--max_wait_secs=2", "--eval_interval_secs=1"]
  first = eval_lib.main(argv)
  assert [r["global_step"] for r in first] == [5, 10]
  assert eval_lib.main(argv) == [], "already evaluated checkpoints are not evaluated again"
  assert {"metrics-5.json", "metrics-10.json", "metrics.json"} <= set(os.listdir(str(train_dir / "eval")))


@pytest.mark.slow
def test_eval_watch_mode_skips_a_checkpoint_deleted_while_queued(frame_data, tmp_path, monkeypatch):
  train_dir = tmp_path / "pruned"
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=10",
                        "--export_model_steps=5"))
  evaluate = eval_lib.Evaluator.evaluate
  def evaluate_then_prune(self, checkpoint):  # training deletes step 10 while step 5 is evaluated
    result = evaluate(self, checkpoint)
    for path in glob.glob(str(train_dir / "model.ckpt-10.*")):
      os.remove(path)
    return result
  monkeypatch.setattr(eval_lib.Evaluator, "evaluate", evaluate_then_prune)
  results = eval_lib.main(["eval.py", "--train_dir=" + str(train_dir), "--batch_size=64",
                           "--eval_data_pattern=" + frame_data["validate"], "--max_wait_secs=1"])
  assert [r["global_step"] for r in results] == [5]
