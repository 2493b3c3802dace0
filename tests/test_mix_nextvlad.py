"""MixNeXtVladModel (linrongc's; the seed's final-submission model): parameter count at the script's
configuration, its training terms against NumPy, the final-submission script's command lines on tiny
data, and distillation from a mixture teacher."""

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import config
import losses
import model_utils
import train
from helpers import ROOT, frame_record, make_frame_videos, train_args, write_records
from utils import InputError

tf.disable_v2_behavior()

# scripts/train_mix_nextvlad_final_submission.sh, as written: its data paths and train_dir are replaced.
PARAMETERS = ("--groups=8 --nextvlad_cluster_size=112 --nextvlad_hidden_size=2048 --expansion=2 "
              "--gating_reduction=16  --drop_rate=0.5 --mix_number=3 --cl_temperature=3 --cl_lambda=9")
TRAIN = ("python train.py {p} --model=MixNeXtVladModel --num_readers=8 --learning_rate_decay_examples "
         "2500000 --num_epochs=15 --video_level_classifier_model=LogisticModel "
         "--label_loss=CrossEntropyLoss --start_new_model=False "
         "--train_data_pattern={data}/[tv][ar]*/[tv]*.tfrecord --train_dir={train_dir} "
         "--frame_features=True --feature_names=\"rgb,audio\" --feature_sizes=\"1024,128\" --batch_size=80 "
         "--base_learning_rate=0.0002 --learning_rate_decay=0.8 --l2_penalty=1e-5 --max_step=700000 "
         "--num_gpu=2")
EVAL = ("python eval.py {p} --batch_size=80 --video_level_classifier_model=LogisticModel "
        "--l2_penalty=1e-5 --label_loss=CrossEntropyLoss --eval_data_pattern={data}/val/validate*.tfrecord "
        "--train_dir {train_dir} --run_once=True")
INFERENCE = ("python inference.py --output_model_tgz {results}/model.tgz --output_file {results}/model.csv "
             "--input_data_pattern={data}/test/test*.tfrecord --train_dir {train_dir} --batch_size=80 "
             "--num_readers=8")
# Tiny model and run: appended after the script's flags (the last value of a flag wins).
# The script's lines with a tiny model and 3 steps appended (a repeated flag takes its last value); eval
# gets the same architecture, since eval refuses flags that contradict the trained run.
TINY_MODEL = ["--nextvlad_cluster_size=8", "--nextvlad_hidden_size=32"]
TINY = TINY_MODEL + ["--batch_size=8", "--max_step=3"]
MIX_SMALL = ["--model=MixNeXtVladModel", "--mix_number=2", "--cl_temperature=3", "--cl_lambda=9"]


def _size(variables):
  return sum(int(np.prod(v.shape.as_list())) for v in variables)


def test_final_submission_parameter_count():
  """235,935,273 trainable weights, derived layer by layer from linrongc's code."""
  def nextvlad(size, clusters, groups, expansion=2):
    expanded, group_size = expansion * size, expansion * size // groups
    return (size * expanded + expanded            # expansion fully_connected
            + expanded * groups + groups          # group attention fully_connected_1
            + expanded * groups * clusters        # cluster_weights
            + 2 * groups * clusters               # cluster_bn beta, gamma
            + group_size * clusters               # cluster_weights2
            + 2 * group_size * clusters)          # vlad_bn
  video, audio = nextvlad(1024, 112, 8), nextvlad(128, 56, 4)
  assert (video, audio) == (4038408, 102596)
  vlad_size = 256 * 112 + 64 * 56
  branch = (video + audio + vlad_size * 2048 + 2 * 2048                   # hidden1_weights, hidden1_bn
            + 2048 * 128 + 2 * 128 + 128 * 2048                          # gating (2048 / 16 = 128)
            + 2048 * 3862 + 3862)                                        # LogisticModel
  assert branch == 78643170
  mixture = 2 * 1152 + (1152 * 3 + 3)                                   # mix_weights_bn, mix_weights
  assert 3 * branch + mixture == 235935273
  hparams = dict(feature_sizes=[1024, 128], groups=8, nextvlad_cluster_size=112,
                 nextvlad_hidden_size=2048, expansion=2, gating_reduction=16, drop_rate=0.5,
                 mix_number=3, cl_temperature=3, cl_lambda=9, l2_penalty=1e-5)
  with tf.Graph().as_default():
    frames = tf.placeholder(tf.float32, [None, None, 1152])
    with tf.variable_scope("teacher"):
      outputs = model_utils.get_model("MixNeXtVladModel", **hparams).create_model(
          frames, tf.placeholder(tf.int32, [None]), 3862, is_training=True)
    trainable = tf.trainable_variables()
    assert _size(trainable) == 3 * branch + mixture
    for n in range(3):
      assert _size([v for v in trainable if v.op.name.startswith("teacher/branch_%d/" % n)]) == branch
    assert _size([v for v in trainable if v.op.name.startswith("teacher/mix_weights")]) == mixture
    assert outputs["representation"].shape.as_list() == [None, 2048]
    assert len(outputs["aux_predictions"]) == 3
    # Three classifier L2 penalties and the collaborative-learning term.
    assert len(tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)) == 4


def _logit(p):
  p = np.asarray(p, np.float64)
  return np.log(p) - np.log1p(-p)


@pytest.mark.slow
def test_training_terms_match_numpy():
  """Training mode: the cl term is cl_lambda * mean_batch Σ_n KL(softmax(z/T) || softmax(z_n/T)) of the
  mixed logits z and the branch logits z_n, in REGULARIZATION_LOSSES; z is a convex combination of the
  z_n; the label loss adds each branch's. Inference mode has neither."""
  hparams = dict(feature_sizes=[12, 4], groups=2, nextvlad_cluster_size=4, nextvlad_hidden_size=8,
                 gating_reduction=2, drop_rate=0.0, mix_number=3, cl_temperature=3.0, cl_lambda=9.0,
                 input_preprocessing="none", l2_penalty=0.0)
  rng = np.random.RandomState(0)
  video = rng.randn(5, 7, 16).astype(np.float32)
  valid = np.array([7, 3, 1, 5, 6], np.int32)
  labels = (rng.rand(5, 6) < 0.3).astype(np.float32)
  with tf.Graph().as_default():
    frames, num_frames = tf.placeholder(tf.float32, [None, None, 16]), tf.placeholder(tf.int32, [None])
    with tf.variable_scope("m", reuse=tf.AUTO_REUSE):
      model = model_utils.get_model("MixNeXtVladModel", **hparams)
      inference = model.create_model(frames, num_frames, 6, is_training=False)
      assert not tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
      assert set(inference) == {"logits", "predictions", "representation"}
      training = model.create_model(frames, num_frames, 6, is_training=True)
    regularization = tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
    assert regularization[-1] is training["regularization_loss"]
    loss = model_utils.training_label_loss(losses.get_loss("CrossEntropyLoss"), training,
                                           tf.constant(labels))
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      for var in tf.trainable_variables():
        var.load(rng.randn(*var.shape.as_list()) * 0.3, sess)
      got, got_loss = sess.run([training, loss], {frames: video, num_frames: valid})
  branch_logits = np.stack([_logit(p) for p in got["aux_predictions"]], axis=1)   # [B, 3, C]
  mixed = got["logits"].astype(np.float64)
  assert np.all(mixed >= branch_logits.min(axis=1) - 1e-4) and np.all(mixed <= branch_logits.max(axis=1) + 1e-4)
  assert np.abs(branch_logits - mixed[:, None]).max() > 0.1, "the branches differ"

  def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
  target = softmax(mixed / 3.0)[:, None, :]
  branch = softmax(branch_logits / 3.0)
  kl = np.sum(target * (np.log(target + 1e-8) - np.log(branch + 1e-8)), axis=2)
  np.testing.assert_allclose(got["regularization_loss"], 9.0 * kl.sum(axis=1).mean(), rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(got["predictions"], 1 / (1 + np.exp(-mixed)), rtol=1e-5, atol=1e-6)

  def cross_entropy(p):
    return np.mean(np.sum(-(labels * np.log(p + 1e-8) + (1 - labels) * np.log(1 - p + 1e-8)), axis=1))
  expected = sum(cross_entropy(p) for p in [got["predictions"]] + got["aux_predictions"])
  np.testing.assert_allclose(got_loss, expected, rtol=1e-4)


@pytest.fixture(scope="module")
def submission_data(tmp_path_factory):
  """The final-submission script's layout at the seed's feature sizes: train/, val/ and test/ shards."""
  root = tmp_path_factory.mktemp("submission")
  for split, count, seed in (("train", 16, 0), ("val", 8, 1), ("test", 8, 2)):
    os.makedirs(str(root / split))
    name = {"val": "validate"}.get(split, split)
    videos = make_frame_videos(count, sizes=(1024, 128), num_classes=3862, seed=seed, min_frames=5,
                               max_frames=40)
    write_records(str(root / split / ("%s0000.tfrecord" % name)),
                  [frame_record(i, None if split == "test" else labels, f) for i, labels, f in videos])
  return str(root)


def _command(template, *extra, **paths):
  argv = shlex.split(template.format(p=PARAMETERS, **paths))
  return [sys.executable, os.path.join(ROOT, argv[1])] + argv[2:] + list(extra)


def _run(argv):
  result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


@pytest.fixture(scope="module")
def submission_run(submission_data, tmp_path_factory):
  train_dir = str(tmp_path_factory.mktemp("mix3_nextvlad") / "run")
  log = _run(_command(TRAIN, *TINY, "--log_every_steps=1", data=submission_data, train_dir=train_dir))
  return train_dir, log


@pytest.mark.slow
def test_final_submission_training_command(submission_run):
  """The script's train.py line (tiny model and 3 steps appended) trains the mixture in teacher/."""
  train_dir, log = submission_run
  assert "regularization" in log and "examples/sec" in log
  flags = config.load_model_flags(train_dir)
  assert (flags["model"], flags["mix_number"], flags["cl_temperature"], flags["cl_lambda"]) == \
      ("MixNeXtVladModel", 3, 3.0, 9.0)
  assert flags["model_type"] == "teacher" and flags["gating_reduction"] == 16
  checkpoint = tf.train.latest_checkpoint(train_dir)
  assert checkpoint.endswith("-3")
  names = [n for n, _ in tf.train.list_variables(checkpoint)]
  assert "teacher/branch_2/video_VLAD/cluster_centres" in names and "teacher/mix_weights/biases" in names


@pytest.mark.slow
def test_final_submission_eval_and_inference_commands(submission_data, submission_run, tmp_path):
  train_dir, _ = submission_run
  _run(_command(EVAL, *TINY_MODEL, data=submission_data, train_dir=train_dir))
  assert os.path.exists(os.path.join(train_dir, "eval", "metrics.json"))
  results = str(tmp_path / "results")
  os.makedirs(results)
  _run(_command(INFERENCE, data=submission_data, train_dir=train_dir, results=results))
  rows = open(os.path.join(results, "model.csv")).read().splitlines()
  assert len(rows) == 9 and os.path.getsize(os.path.join(results, "model.tgz")) > 0


@pytest.fixture(scope="module")
def mix_teacher(frame_data, tmp_path_factory):
  train_dir = tmp_path_factory.mktemp("mix_teacher")
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=30", *MIX_SMALL))
  return train_dir


@pytest.mark.slow
def test_mixture_teacher_distils_students(frame_data, mix_teacher, tmp_path):
  """A frozen MixNeXtVLAD teacher distils a NeXtVLAD student (L_pred on the mixture's predictions,
  L_rep on its mixture-weighted representation) and a MixNeXtVLAD student; L_rep refuses other sizes."""
  teacher_flags = config.load_model_flags(str(mix_teacher))
  assert teacher_flags["model"] == "MixNeXtVladModel"
  for name, model in (("nextvlad", ["--model=NeXtVLADModel"]), ("mix", MIX_SMALL)):
    train.FLAGS.unparse_flags()
    train.FLAGS(train_args(frame_data, tmp_path / name, "--model_type=kd", "--k_frame=4",
                           "--teacher_checkpoint=" + str(mix_teacher), "--max_steps=3",
                           "--log_every_steps=1", *model))
    run = train.prepare(train.FLAGS)
    values = run.sess.run({k: run.parts.fetch[k] for k in ("losses", "teacher_predictions")})
    assert {"ce", "pred", "rep"} <= set(values["losses"]) and values["losses"]["rep"] > 0
    assert train.train_loop(run) == 3
    run.sess.close()
  with pytest.raises(InputError, match="L_rep needs representations of one size: the teacher's has 32"):
    train.main(train_args(frame_data, tmp_path / "other", "--model_type=kd", "--k_frame=4",
                          "--teacher_checkpoint=" + str(mix_teacher), "--nextvlad_hidden_size=16"))
