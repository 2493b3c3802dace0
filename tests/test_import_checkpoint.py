"""scripts/import_checkpoint.py: checkpoints with exactly the seed's (and linrongc's) variable names and
shapes, filled with random values, import; this code's predictions from them (through its evaluation
graph) equal a NumPy transcription of their forward pass; eval, inference and KD accept the result."""

import csv
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import config
import frame_level_models
import import_checkpoint
import inference
import model_utils
import seed_numpy
import train
from helpers import frame_record, make_frame_videos, run_ok, write_records
from utils import InputError

HP = dict(feature_sizes=[16, 4], groups=2, clusters=4, hidden=8, expansion=2, reduction=2, classes=5)
ARCH = ["--feature_sizes=16,4", "--groups=2", "--nextvlad_cluster_size=4", "--nextvlad_hidden_size=8",
        "--expansion=2", "--gating_reduction=2", "--num_classes=5"]


def write_seed_checkpoint(path, shapes, seed=0, global_step=("teacher/global_step", 1234)):
  """Saves {name: random value} with plain tf.Variables under exactly those names, plus the global step
  and an Adam slot and beta power as the seed's trainer leaves them; returns the values."""
  rng = np.random.RandomState(seed)
  values = {}
  for name, shape in sorted(shapes.items()):
    value = rng.randn(*shape) * 0.5
    values[name] = (np.abs(value) + 0.5 if name.endswith("moving_variance") else value).astype(np.float32)
  with tf.Graph().as_default():
    variables = {name: tf.Variable(value) for name, value in values.items()}
    first = sorted(values)[0]
    variables[first + "/Adam"] = tf.Variable(np.zeros_like(values[first]))
    variables["beta1_power"] = tf.Variable(0.9)
    if global_step:
      variables[global_step[0]] = tf.Variable(global_step[1], dtype=tf.int32)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      tf.train.Saver(variables).save(sess, path)
  return values


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  root = tmp_path_factory.mktemp("import_data")
  videos = make_frame_videos(7, sizes=(16, 4), num_classes=5, seed=3, min_frames=2, max_frames=40)
  return write_records(str(root / "validate0000.tfrecord"), [frame_record(*v) for v in videos])


def run_import(checkpoint, output_dir, *flags):
  return import_checkpoint.main(["import_checkpoint.py", "--checkpoint=" + checkpoint,
                                 "--output_dir=" + str(output_dir)] + ARCH + list(flags))


def evaluate(train_dir, files):
  """The imported run through this code's evaluation graph: frames as read, num_frames, outputs."""
  model_flags = config.load_model_flags(str(train_dir))
  with tf.Graph().as_default():
    parts = model_utils.build_evaluation_graph(model_flags, [files], batch_size=16)
    with tf.Session() as sess:
      sess.run(parts["iterator_init"])
      parts["saver"].restore(sess, tf.train.latest_checkpoint(str(train_dir)))
      return sess.run({"frames": parts["batch"]["video_matrix"], "num_frames": parts["batch"]["num_frames"],
                       "outputs": parts["outputs"], "step": parts["global_step"],
                       "ids": parts["batch"]["video_ids"]})


def whitened(frames):
  return seed_numpy.whiten(frames.astype(np.float64), frame_level_models.load_eigenvals("", 16), 16)


@pytest.mark.slow
def test_seed_teacher_checkpoint_imports_and_predicts_like_the_seed(tmp_path, shards):
  shapes = seed_numpy.seed_variables("teacher/tower/", HP["feature_sizes"], HP["groups"],
                                         HP["clusters"], HP["hidden"], HP["expansion"], HP["reduction"],
                                         HP["classes"])
  assert len(shapes) == 2 * 14 + 13
  params = write_seed_checkpoint(str(tmp_path / "seed" / "model.ckpt-1234"), shapes)
  # As the script's docstring shows it, in a fresh interpreter (where train.py's flags are not defined).
  run_ok("scripts/import_checkpoint.py", "--checkpoint=%s" % (tmp_path / "seed"),
         "--output_dir=%s" % (tmp_path / "imported"), *ARCH)
  model_flags = config.load_model_flags(str(tmp_path / "imported"))
  assert model_flags["model"] == "NeXtVLADModel" and model_flags["model_type"] == "teacher"
  got = evaluate(tmp_path / "imported", shards)
  assert got["step"] == 1234 and got["frames"].shape == (7, 300, 20)
  assert got["num_frames"].min() < 40 and got["num_frames"].max() > 2
  hidden, logits = seed_numpy.nextvlad_model(whitened(got["frames"]), got["num_frames"], params, 16,
                                             HP["clusters"], HP["groups"], HP["expansion"],
                                             base="teacher/tower/")
  np.testing.assert_allclose(got["outputs"]["predictions"], 1 / (1 + np.exp(-logits)), atol=1e-5, rtol=0)
  np.testing.assert_allclose(got["outputs"]["logits"], logits, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(got["outputs"]["representation"], hidden, atol=1e-5, rtol=1e-4)

  csv_path = str(tmp_path / "predictions.csv")
  inference.main(["inference.py", "--train_dir=" + str(tmp_path / "imported"),
                  "--input_data_pattern=" + shards, "--output_file=" + csv_path, "--top_k=3"])
  rows = list(csv.reader(open(csv_path)))
  assert rows[0] == ["VideoId", "LabelConfidencePairs"] and len(rows) == 8
  top = {r[0]: int(r[1].split()[0]) for r in rows[1:]}
  assert top == {i.decode(): int(c) for i, c in zip(got["ids"], np.argmax(logits, axis=1))}


@pytest.mark.slow
def test_linrongc_mixture_checkpoint_imports_and_distils(tmp_path, shards):
  """linrongc's MixNeXtVladModel under tower/ (model and mix_number detected); this code's mixture
  predictions and representation equal the NumPy transcription; it serves as a KD teacher."""
  shapes = seed_numpy.seed_variables("tower/", HP["feature_sizes"], HP["groups"], HP["clusters"],
                                         HP["hidden"], HP["expansion"], HP["reduction"], HP["classes"],
                                         mix_number=2)
  params = write_seed_checkpoint(str(tmp_path / "mix" / "model.ckpt-77"), shapes,
                                 global_step=("global_step", 77))
  run_import(str(tmp_path / "mix"), tmp_path / "imported")
  model_flags = config.load_model_flags(str(tmp_path / "imported"))
  assert model_flags["model"] == "MixNeXtVladModel" and model_flags["mix_number"] == 2
  got = evaluate(tmp_path / "imported", shards)
  assert got["step"] == 77
  weights, _, logits, representation = seed_numpy.mix_nextvlad_model(
      whitened(got["frames"]), got["num_frames"], params, 16, HP["clusters"], HP["groups"],
      HP["expansion"], 2, base="tower/")
  assert 0.05 < weights.min() and weights.max() < 0.95, "both branches matter in the comparison"
  np.testing.assert_allclose(got["outputs"]["predictions"], 1 / (1 + np.exp(-logits)), atol=1e-5, rtol=0)
  np.testing.assert_allclose(got["outputs"]["logits"], logits, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(got["outputs"]["representation"], representation, atol=1e-5, rtol=1e-4)

  kd_dir = tmp_path / "kd"
  train.main(["train.py", "--train_data_pattern=" + shards, "--train_dir=" + str(kd_dir),
              "--model_type=kd", "--model=NeXtVLADModel", "--k_frame=6", "--max_steps=2",
              "--batch_size=4", "--num_epochs=0", "--teacher_checkpoint=" + str(tmp_path / "imported"),
              "--num_readers=1", "--shuffle_buffer=8"] + ARCH)
  assert tf.train.latest_checkpoint(str(kd_dir)).endswith("-2")


def test_seed_student_and_bad_checkpoints(tmp_path):
  tiny = HP["feature_sizes"], HP["groups"], HP["clusters"], HP["hidden"], HP["expansion"], \
      HP["reduction"], HP["classes"]
  student = seed_numpy.seed_variables("student/tower/", *tiny)
  write_seed_checkpoint(str(tmp_path / "student" / "model.ckpt-5"), student,
                        global_step=("student/global_step", 5))
  with pytest.raises(InputError, match="student/tower/ is a student: pass the --k_frame"):
    run_import(str(tmp_path / "student"), tmp_path / "out0")
  run_import(str(tmp_path / "student"), tmp_path / "out1", "--k_frame=10")
  model_flags = config.load_model_flags(str(tmp_path / "out1"))
  assert model_flags["model_type"] == "student" and config.frames_read(model_flags) == 10
  assert tf.train.latest_checkpoint(str(tmp_path / "out1")).endswith("-5")
  with pytest.raises(InputError, match="--output_dir=.*out1 already holds a run"):
    run_import(str(tmp_path / "student"), tmp_path / "out1", "--k_frame=10")

  both = dict(student, **seed_numpy.seed_variables("teacher/tower/", *tiny))
  write_seed_checkpoint(str(tmp_path / "both" / "model.ckpt-1"), both)
  with pytest.raises(InputError, match="models under teacher/tower/, student/tower/; .*--prefix"):
    run_import(str(tmp_path / "both"), tmp_path / "out2")
  run_import(str(tmp_path / "both"), tmp_path / "out2", "--prefix=teacher/tower")
  assert config.load_model_flags(str(tmp_path / "out2"))["model_type"] == "teacher"

  broken = seed_numpy.seed_variables("tower/", *tiny)
  del broken["tower/gating_bn/moving_mean"]
  broken["tower/audio_VLAD/cluster_weights2"] = [1, 8, 3]
  write_seed_checkpoint(str(tmp_path / "broken" / "model.ckpt-1"), broken, global_step=None)
  with pytest.raises(InputError) as error:
    run_import(str(tmp_path / "broken"), tmp_path / "out3")
  message = str(error.value)
  assert "\n" not in message and "missing tower/gating_bn/moving_mean" in message
  assert "shape mismatch tower/audio_VLAD/cluster_weights2 [1, 8, 3] (graph needs [1, 8, 2])" in message
  assert not os.path.exists(str(tmp_path / "out3"))
