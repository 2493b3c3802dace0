"""Knowledge distillation: a frozen teacher, parallel mode, restore errors, student-only outputs."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import config
import eval as eval_lib
import export_model
import inference
import kd_teacher
import model_utils
import train
from helpers import train_args
from utils import InputError


@pytest.fixture(scope="module")
def teacher_dir(frame_data, tmp_path_factory):
  train_dir = tmp_path_factory.mktemp("kd_teacher")
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=60"))
  return train_dir


def _prepare(argv):
  train.FLAGS.unparse_flags()
  train.FLAGS(argv)
  return train.prepare(train.FLAGS)


def _values(run, prefix, local=False):
  with run.parts.graph.as_default():
    variables = tf.local_variables() if local else tf.global_variables()
    return {v.op.name: run.sess.run(v) for v in variables if v.op.name.startswith(prefix)}


@pytest.mark.slow
def test_serial_kd_freezes_teacher_and_moves_student(frame_data, teacher_dir, tmp_path):
  run = _prepare(train_args(frame_data, tmp_path / "kd", "--model_type=KD", "--k_frame=4",
                            "--teacher_checkpoint=" + str(teacher_dir), "--max_steps=8"))
  with run.parts.graph.as_default():
    teacher_before = _values(run, "teacher/", local=True)
    student_before = _values(run, "student/")
    assert not [v for v in tf.trainable_variables() if v.op.name.startswith("teacher/")]
    assert not [v for v in tf.global_variables() if "teacher/" in v.op.name], \
        "no teacher variable, optimizer slot or moving statistic among the saved ones"
  assert train.train_loop(run) == 8
  teacher_after = _values(run, "teacher/", local=True)
  student_after = _values(run, "student/")
  run.close()
  checkpoint = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(teacher_dir)))
  assert len(teacher_after) == len(teacher_before) > 10
  for name, value in teacher_after.items():
    assert np.array_equal(value, teacher_before[name]), name
    assert np.array_equal(value, checkpoint.get_tensor(name)), "teacher equals its checkpoint: " + name
  moved = [n for n in student_before if not np.array_equal(student_before[n], student_after[n])]
  assert len(moved) > len(student_before) // 2
  saved = [n for n, _ in tf.train.list_variables(str(tmp_path / "kd"))]
  assert saved and not [n for n in saved if n.startswith("teacher/")]


def test_teacher_in_kd_graph_predicts_like_its_checkpoint(frame_data, teacher_dir):
  """The KD graph's teacher runs in inference mode (no dropout, moving statistics): it predicts
  exactly what the teacher checkpoint predicts when evaluated alone."""
  teacher_flags = config.load_model_flags(str(teacher_dir))
  student_flags = dict(teacher_flags, model_type="kd", k_frame=4)
  checkpoint = tf.train.latest_checkpoint(str(teacher_dir))
  rng = np.random.RandomState(0)
  frames = rng.randn(6, 24, 20).astype(np.float32)
  num_frames = np.array([24, 10, 3, 24, 7, 15], np.int32)
  labels = (rng.rand(6, 8) < 0.3).astype(np.float32)
  opts = train.FLAGS
  train.FLAGS.unparse_flags()
  train.FLAGS(train_args(frame_data, "/tmp/unused"))
  with tf.Graph().as_default():
    batch = {"video_matrix": tf.constant(frames[:, :4]), "num_frames": tf.constant(np.minimum(num_frames, 4)),
             "labels": tf.constant(labels), "teacher_matrix": tf.constant(frames),
             "teacher_num_frames": tf.constant(num_frames)}
    teacher = kd_teacher.Teacher(checkpoint, teacher_flags, None)
    fetch = train.build_training_graph(student_flags, opts, batch, ["/cpu:0"], teacher)
    teacher_saver, _ = kd_teacher.savers(teacher, False)
    with tf.Session() as sess:
      sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
      teacher_saver.restore(sess, checkpoint)
      in_kd = [sess.run(fetch["teacher_predictions"]) for _ in range(2)]
  with tf.Graph().as_default():
    outputs = model_utils.build_model(teacher_flags, tf.constant(frames), tf.constant(num_frames), False)
    saver = tf.train.Saver(model_utils.scope_variables("teacher"))
    with tf.Session() as sess:
      saver.restore(sess, checkpoint)
      alone = sess.run(outputs["predictions"])
  np.testing.assert_allclose(in_kd[0], alone, atol=1e-6)
  np.testing.assert_array_equal(in_kd[0], in_kd[1])


@pytest.mark.slow
def test_parallel_kd_updates_both(frame_data, tmp_path):
  run = _prepare(train_args(frame_data, tmp_path / "par", "--model_type=kd", "--kd_mode=parallel",
                            "--k_frame=4", "--max_steps=6"))
  before = _values(run, "")
  train.train_loop(run)
  after = _values(run, "")
  run.close()
  for scope in ("teacher/", "student/"):
    names = [n for n in before if n.startswith(scope) and "/Adam" not in n]
    assert names and any(not np.array_equal(before[n], after[n]) for n in names), scope
  result = eval_lib.Evaluator(str(tmp_path / "par"), frame_data["validate"], 64).evaluate(
      tf.train.latest_checkpoint(str(tmp_path / "par")))
  assert result["num_videos"] == 150


@pytest.mark.slow
def test_bad_teacher_checkpoints(frame_data, teacher_dir, tmp_path):
  kd = lambda *extra: train.main(train_args(frame_data, tmp_path / "bad", "--model_type=kd",
                                            "--k_frame=4", "--max_steps=2", *extra))
  with pytest.raises(InputError, match="needs --teacher_checkpoint"):
    kd()
  with pytest.raises(InputError, match="--teacher_checkpoint=.*nowhere.*no such checkpoint"):
    kd("--teacher_checkpoint=" + str(tmp_path / "nowhere" / "model.ckpt-5"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(InputError, match="holds no checkpoint"):
    kd("--teacher_checkpoint=" + str(empty))
  # A student whose architecture differs from the teacher's: every mismatch is listed.
  with pytest.raises(InputError, match=r"does not fit the model: .*shape mismatch .*teacher/"):
    kd("--teacher_checkpoint=" + str(teacher_dir), "--groups=4", "--student_init_from_teacher")
  # A checkpoint lacking variables its model_flags.json calls for (here: a MoE classifier).
  other = tmp_path / "relabelled"
  shutil.copytree(str(teacher_dir), str(other))
  flags = config.load_model_flags(str(other))
  config.write_model_flags(str(other), dict(flags, video_level_classifier_model="MoeModel"))
  with pytest.raises(InputError, match=r"does not fit the model: missing teacher/"):
    kd("--teacher_checkpoint=" + str(other))
  # A checkpoint whose files are damaged.
  damaged = tmp_path / "damaged"
  shutil.copytree(str(teacher_dir), str(damaged))
  for index in damaged.glob("model.ckpt-*.index"):
    index.write_bytes(b"not a checkpoint index")
  with pytest.raises(InputError, match="--teacher_checkpoint=.*damaged.*cannot be read as a checkpoint"):
    kd("--teacher_checkpoint=" + str(damaged))
  assert not os.path.exists(str(tmp_path / "bad" / "checkpoint")), "failed before any training"


@pytest.mark.slow
def test_kd_export_and_inference_are_student_only(frame_data, teacher_dir, tmp_path):
  train_dir = tmp_path / "kd_out"
  train.main(train_args(frame_data, train_dir, "--model_type=kd", "--k_frame=4",
                        "--teacher_checkpoint=" + str(teacher_dir), "--max_steps=4"))
  export_dir = export_model.export(str(train_dir), export_dir=str(tmp_path / "exported"))
  names = [n for n, _ in tf.train.list_variables(os.path.join(export_dir, "variables", "variables"))]
  assert names and not [n for n in names if n.startswith("teacher/")]
  model_flags = config.load_model_flags(str(train_dir))
  with tf.Graph().as_default():
    parts = model_utils.build_evaluation_graph(model_flags, [frame_data["validate"].replace("*", "0000")], 8)
    assert parts["batch"]["video_matrix"].shape.as_list()[1:] == [4, 20], "the student reads k frames"
    assert not [v for v in tf.global_variables() if v.op.name.startswith("teacher/")]
  # The SavedModel predicts what the k-frame checkpoint predicts (it would not, reading other frames).
  csvs = {}
  for source in ("--train_dir=" + str(train_dir), "--saved_model_dir=" + export_dir):
    csvs[source] = str(tmp_path / ("%d.csv" % len(csvs)))
    inference.main(["inference.py", source, "--input_data_pattern=" + frame_data["validate"],
                    "--output_file=" + csvs[source], "--batch_size=64"])
  rows = [{r[0]: r[1].split() for r in list(csv.reader(open(path)))[1:]} for path in csvs.values()]
  assert rows[0].keys() == rows[1].keys() and len(rows[0]) == 150
  for video, pairs in rows[0].items():
    assert pairs[0::2] == rows[1][video][0::2]
    np.testing.assert_allclose(np.float64(pairs[1::2]), np.float64(rows[1][video][1::2]), atol=1e-5)


@pytest.mark.slow
def test_resumed_kd_restores_student_from_its_run_and_teacher_from_teacher(frame_data, teacher_dir, tmp_path):
  args = lambda steps: train_args(frame_data, tmp_path / "resume", "--model_type=kd", "--k_frame=4",
                                  "--teacher_checkpoint=" + str(teacher_dir), "--max_steps=%d" % steps)
  assert train.main(args(4)) == 4
  run = _prepare(args(8))
  student = _values(run, "student/")
  teacher = _values(run, "teacher/", local=True)
  run.close()
  own = tf.train.load_checkpoint(str(tmp_path / "resume" / "model.ckpt-4"))
  teacher_checkpoint = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(teacher_dir)))
  assert student and all(np.array_equal(v, own.get_tensor(n)) for n, v in student.items())
  assert teacher and all(np.array_equal(v, teacher_checkpoint.get_tensor(n)) for n, v in teacher.items())
  with pytest.raises(InputError, match="--kd_mode=parallel: .*model.ckpt-4 was trained with --kd_mode=serial"):
    train.main(args(8) + ["--kd_mode=parallel"])
  recorded = json.load(open(str(tmp_path / "resume" / kd_teacher.RECORD_FILE)))
  assert recorded["teacher_checkpoint"] == tf.train.latest_checkpoint(str(teacher_dir))


@pytest.mark.slow
def test_kd_rejects_what_it_cannot_distil(frame_data, teacher_dir, tmp_path):
  kd = lambda *extra: train.main(train_args(frame_data, tmp_path / "bad", "--model_type=kd", "--k_frame=4",
                                            "--teacher_checkpoint=" + str(teacher_dir), "--max_steps=2",
                                            *extra))
  with pytest.raises(InputError, match=r"L_rep needs representations of one size: the teacher's has 32 "
                                       r"values, the student's 16"):
    kd("--nextvlad_hidden_size=16")
  with pytest.raises(InputError, match="needs frame-level data"):
    kd("--frame_features=False")
  assert not os.path.exists(str(tmp_path / "bad" / "checkpoint"))
  # Without L_rep, a smaller student is a valid distillation target; with --kd_regularization only its
  # own penalty counts (the seed's KD loss, the default, has none: tests/test_fidelity.py).
  run = _prepare(train_args(frame_data, tmp_path / "small", "--model_type=kd", "--k_frame=4",
                            "--teacher_checkpoint=" + str(teacher_dir), "--nextvlad_hidden_size=16",
                            "--rep_weight=0", "--max_steps=1", "--kd_regularization"))
  with run.parts.graph.as_default():
    penalties = tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
    student_penalty = [p for p in penalties if "/student/" in p.name]
    assert student_penalty and len(penalties) > len(student_penalty), "the teacher's penalty exists"
    own = run.sess.run(tf.add_n(student_penalty))
  assert run.sess.run(run.parts.fetch["losses"]["regularization"]) == pytest.approx(own, rel=1e-6)
  run.close()


@pytest.mark.slow
def test_seed_kd_loss_has_no_penalty_and_a_training_mode_teacher_moves_its_statistics(
    frame_data, teacher_dir, tmp_path):
  """--kd_teacher_is_training builds the teacher as the seed did: its batch-norm moving statistics
  follow the batches during KD while its weights stay frozen; and by default the KD loss is the seed's,
  without the student's L2 penalty."""
  run = _prepare(train_args(frame_data, tmp_path / "seedkd", "--model_type=kd", "--k_frame=4",
                            "--teacher_checkpoint=" + str(teacher_dir), "--max_steps=3",
                            "--kd_teacher_is_training"))
  assert "regularization" not in run.parts.fetch["losses"]
  before = _values(run, "teacher/", local=True)
  assert train.train_loop(run) == 3
  after = _values(run, "teacher/", local=True)
  run.close()
  moved = sorted(n for n in before if not np.array_equal(before[n], after[n]))
  assert moved and all("/moving_" in n for n in moved)
  assert len(moved) == len([n for n in before if "/moving_" in n])
