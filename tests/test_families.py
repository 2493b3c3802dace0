"""The model families besides NeXtVLAD (H-RNN, NetVLAD, the starter's LSTM and DBoF): each forward pass in
inference mode against a NumPy transcription of its definition written with explicit loops (one video,
one frame, one block at a time), parameter counts and multiply-adds at the published sizes derived by
hand, and (slow) a few training steps as teacher, student and KD student through train.main."""

import os

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
from helpers import model_flags, randomise, train_args
from utils import InputError

tf.disable_v2_behavior()

SIZES = [6, 2]   # rgb, audio
CLASSES = 3


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _l2(frames):
  return frames / np.sqrt(np.maximum(np.sum(frames ** 2, axis=-1, keepdims=True), 1e-12))


def _bn(x, p, scope):
  return ((x - p[scope + "/moving_mean"]) / np.sqrt(p[scope + "/moving_variance"] + 1e-3)
          * p[scope + "/gamma"] + p[scope + "/beta"])


def _run(flags, video, valid, mode="teacher"):
  """The model's outputs in inference mode on random weights, and those weights by name (without the
  role scope)."""
  rng = np.random.RandomState(7)
  with tf.Graph().as_default():
    frames = tf.placeholder(tf.float32, [None, None, sum(SIZES)])
    num_frames = tf.placeholder(tf.int32, [None])
    outputs = model_utils.build_model(flags, frames, num_frames, is_training=False, scope="teacher")
    with tf.Session() as sess:
      params = randomise(sess, tf.global_variables(), rng)
      return sess.run(outputs, {frames: video, num_frames: valid}), params


def _videos():
  """Three videos of 11 frames (7, 3 and 0 of them valid), garbage past each one's end."""
  rng = np.random.RandomState(3)
  return rng.randn(3, 11, sum(SIZES)).astype(np.float32) * 2.0, np.array([7, 3, 0], np.int32)


def _np_lstm(sequence, p, scope, layers, cells, emit):
  """One video's LSTM stack, frame by frame: BasicLSTMCell (gates i, j, f, o; forget bias 1)."""
  state = [np.zeros(cells) for _ in range(2 * layers)]
  for x in sequence:
    for layer in range(layers):
      c, h = state[2 * layer], state[2 * layer + 1]
      gates = np.concatenate([x, h]) @ p["%s/layer_%d/weights" % (scope, layer)] + \
          p["%s/layer_%d/biases" % (scope, layer)]
      i, j, f, o = np.split(gates, 4)
      c = c * _sigmoid(f + 1.0) + _sigmoid(i) * np.tanh(j)
      h = np.tanh(c) * _sigmoid(o)
      state[2 * layer], state[2 * layer + 1] = c, h
      x = h
  return np.concatenate(state) if emit == "state" else state[-1]


def _np_classifier(representation, p, moe_mixtures=None):
  if moe_mixtures is None:
    return representation @ p["classifier/logistic/weights"] + p["classifier/logistic/biases"]
  gates = (representation @ p["classifier/gates/weights"]).reshape(CLASSES, moe_mixtures + 1)
  gates = np.exp(gates - gates.max(axis=1, keepdims=True))
  gates /= gates.sum(axis=1, keepdims=True)
  experts = (representation @ p["classifier/experts/weights"] + p["classifier/experts/biases"]).reshape(
      CLASSES, moe_mixtures)
  probability = np.sum(gates[:, :moe_mixtures] * _sigmoid(experts), axis=1)
  return np.log(probability / (1 - probability))


def _check(got, expected_representations, expected_logits):
  np.testing.assert_allclose(got["representation"], expected_representations, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["logits"], expected_logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["predictions"], _sigmoid(np.asarray(expected_logits)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("representation,role,classifier", [
    ("state", "teacher", "LogisticModel"), ("h", "student", "MoeModel")])
def test_hrnn_matches_numpy(representation, role, classifier):
  """Blocks of the valid frames only (3 for a teacher here, 2 for a student); an empty block is never fed
  to the upper LSTM; a video without frames has E = 0."""
  flags = model_flags(model="HierarchicalRnnModel", model_type=role, k_frame=11, num_classes=CLASSES,
                      feature_sizes="6,2", hrnn_block_frames=3, hrnn_student_block_frames=2, hrnn_cells=4,
                      hrnn_layers=2, hrnn_representation=representation,
                      video_level_classifier_model=classifier, moe_num_mixtures=2)
  assert flags["input_preprocessing"] == "l2"
  video, valid = _videos()
  got, p = _run(flags, video, valid)
  block = 3 if role == "teacher" else 2
  representations, logits = [], []
  for b in range(3):
    frames = _l2(video[b, :valid[b]].astype(np.float64))
    block_vectors = [_np_lstm(frames[start:start + block], p, "lower_lstm", 2, 4, representation)
                     for start in range(0, valid[b], block)]
    representations.append(_np_lstm(block_vectors, p, "upper_lstm", 2, 4, representation))
    logits.append(_np_classifier(representations[-1], p, 2 if classifier == "MoeModel" else None))
  assert got["representation"].shape == (3, 16 if representation == "state" else 4)
  assert not got["representation"][2].any()
  _check(got, representations, logits)


@pytest.mark.parametrize("light", [False, True])
def test_netvlad_matches_numpy(light):
  flags = model_flags(model="NetVLADModelLF", num_classes=CLASSES, feature_sizes="6,2", netvlad_cluster_size=4,
                      netvlad_hidden_size=5, lightvlad=light)
  video, valid = _videos()
  got, p = _run(flags, video, valid)
  representations, logits = [], []
  for b in range(3):
    frames = _bn(_l2(video[b, :valid[b]].astype(np.float64)), p, "input_bn")
    vlads = []
    for scope, start, size, clusters in (("video_VLAD", 0, 6, 4), ("audio_VLAD", 6, 2, 2)):
      vlad = np.zeros((size, clusters))
      for frame in frames[:, start:start + size]:
        scores = _bn(frame @ p[scope + "/cluster/weights"], p, scope + "/cluster_bn")
        assignment = np.exp(scores - scores.max())
        assignment /= assignment.sum()
        for k in range(clusters):
          centre = 0.0 if light else p[scope + "/cluster_centres"][0, :, k]
          vlad[:, k] += assignment[k] * (frame - centre)
      for k in range(clusters):
        vlad[:, k] /= max(np.sqrt(np.sum(vlad[:, k] ** 2)), 1e-6)
      flat = np.array([vlad[d, k] for d in range(size) for k in range(clusters)])
      vlads.append(flat / max(np.sqrt(np.sum(flat ** 2)), 1e-6))
    hidden = np.concatenate(vlads) @ p["hidden1/weights"] + p["hidden1/biases"]
    hidden = hidden * _sigmoid(_bn(hidden @ p["gating/weights"], p, "gating_bn"))
    representations.append(hidden)
    logits.append(_np_classifier(hidden, p))
  _check(got, representations, logits)


def test_lstm_matches_numpy():
  flags = model_flags(model="LstmModel", num_classes=CLASSES, feature_sizes="6,2", lstm_cells=5, lstm_layers=2)
  video, valid = _videos()
  got, p = _run(flags, video, valid)
  representations = [_np_lstm(_l2(video[b, :valid[b]].astype(np.float64)), p, "lstm", 2, 5, "h")
                     for b in range(3)]
  _check(got, representations, [_np_classifier(r, p) for r in representations])


@pytest.mark.parametrize("iterations,pooling", [(5, "max"), (0, "average")])
def test_dbof_matches_numpy(iterations, pooling):
  """In inference the R frames are the fixed positions floor((2i + 1)·n / 2R) (with replacement)."""
  flags = model_flags(model="DbofModel", num_classes=CLASSES, feature_sizes="6,2", iterations=iterations,
                      dbof_cluster_size=7, dbof_hidden_size=4, dbof_pooling_method=pooling)
  video, valid = _videos()
  got, p = _run(flags, video, valid)
  representations = []
  for b in range(3):
    n = valid[b]
    chosen = [(2 * i + 1) * n // (2 * iterations) for i in range(iterations)] if iterations else range(n)
    frames = _l2(video[b].astype(np.float64))
    activations = []
    for t in (chosen if n else []):
      x = _bn(frames[t], p, "input_bn")
      activations.append(np.clip(_bn(x @ p["cluster/weights"], p, "cluster_bn"), 0, 6))
    pooled = np.zeros(7) if not activations else (
        np.max(activations, axis=0) if pooling == "max" else np.mean(activations, axis=0))
    representations.append(np.clip(_bn(pooled @ p["hidden1/weights"], p, "hidden1_bn"), 0, 6))
  _check(got, representations, [_np_classifier(r, p) for r in representations])


# -- sizes: parameters and multiply-adds, by hand --------------------------------------------------------
FULL = dict(num_classes=3862, feature_sizes="1024,128")


def _parameters(flags):
  with tf.Graph().as_default():
    model_utils.build_model(flags, tf.placeholder(tf.float32, [None, None, 1152]),
                            tf.placeholder(tf.int32, [None]), is_training=True)
    return sum(int(np.prod(v.shape.as_list())) for v in tf.trainable_variables())


@pytest.mark.slow
def test_netvlad_parameters_at_the_papers_size():
  """K = 256, H = 1024, 3862 classes, 1024 + 128 features, LogisticModel head (docs/BACKGROUND.md)."""
  input_bn = 2 * 1152                                              # beta, gamma
  video_branch = 1024 * 256 + 2 * 256 + 1024 * 256                 # assignment W, cluster_bn, centres
  audio_branch = 128 * 128 + 2 * 128 + 128 * 128                   # K/2 = 128 clusters
  hidden = (1024 * 256 + 128 * 128) * 1024 + 1024                  # weights [278,528, 1024], biases
  gating = 1024 * 1024 + 2 * 1024                                  # G [H, H], gating_bn
  logistic = 1024 * 3862 + 3862
  body = input_bn + video_branch + audio_branch + hidden + gating
  assert body == 286824448 and body + logistic == 290782998
  assert _parameters(model_flags(model="NetVLADModelLF", **FULL)) == 290782998
  moe = 1024 * 3862 * 3 + 1024 * 3862 * 2 + 3862 * 2               # gates (no bias), experts
  assert _parameters(model_flags(model="NetVLADModelLF", video_level_classifier_model="MoeModel",
                                 **FULL)) == body + moe == 306605612


@pytest.mark.slow
def test_recurrent_and_dbof_parameters_at_the_published_sizes():
  lower = (1152 + 1024) * 4096 + 4096 + (1024 + 1024) * 4096 + 4096   # 2 x 1024 on 1152-d frames
  upper = (4096 + 1024) * 4096 + 4096 + (1024 + 1024) * 4096 + 4096   # on the 4096-d block states
  moe_on_state = 4096 * 3862 * 3 + 4096 * 3862 * 2 + 3862 * 2
  assert lower + upper == 46678016 and moe_on_state == 79101484
  assert _parameters(model_flags(model="HierarchicalRnnModel", video_level_classifier_model="MoeModel",
                                 **FULL)) == lower + upper + moe_on_state
  assert _parameters(model_flags(model="LstmModel", **FULL)) == lower + 1024 * 3862 + 3862
  dbof = 2 * 1152 + 1152 * 8192 + 2 * 8192 + 8192 * 1024 + 2 * 1024   # input_bn, cluster, hidden1
  assert _parameters(model_flags(model="DbofModel", **FULL)) == dbof + 1024 * 3862 + 3862


def test_multiply_adds_by_hand():
  """model_utils.macs against hand counts per video at the published sizes, teacher (300 frames) and k."""
  logistic = lambda size: size * 3862
  moe2 = lambda size: size * 3862 * 5                               # gates 3 + experts 2 per class
  # NeXtVLAD, the seed's size: per rgb frame expansion 1024·2048, attention 2048·8, assignment
  # 2048·1024, aggregation 8·256·128; audio 128·256, 256·4, 256·256, 4·64·64.
  rgb = 1024 * 2048 + 2048 * 8 + 2048 * 1024 + 8 * 256 * 128
  audio = 128 * 256 + 256 * 4 + 256 * 256 + 4 * 64 * 64
  video = (256 * 128 + 64 * 64) * 2048 + 2048 * 256 + 256 * 2048 + logistic(2048)
  nextvlad = model_flags(model="NeXtVLADModel", **FULL)
  assert model_utils.macs(nextvlad, 300) == 300 * (rgb + audio) + video == 1461018624
  assert model_utils.macs(nextvlad, 30) == 30 * (rgb + audio) + video == 222111744
  # H-RNN, 2 x 1024: a frame step (1152 + 1024)·4096 + 2048·4096, a block step (4096 + 1024)·4096 +
  # 2048·4096; teacher 20 blocks of 15 frames, k = 30 student 5 blocks of 6.
  frame_step, block_step = 2176 * 4096 + 2048 * 4096, 5120 * 4096 + 2048 * 4096
  teacher = model_flags(model="HierarchicalRnnModel", video_level_classifier_model="MoeModel", **FULL)
  student = dict(teacher, model_type="kd", k_frame=30)
  assert model_utils.macs(teacher, 300) == 300 * frame_step + 20 * block_step + moe2(4096) == 5856747520
  assert model_utils.macs(student, 30) == 30 * frame_step + 5 * block_step + moe2(4096) == 744939520
  assert model_utils.macs(dict(student, k_frame=10), 10) == 12 * frame_step + 2 * block_step + moe2(4096)
  paper = dict(teacher, hrnn_block_frames=20)                       # the paper's teacher blocks
  assert model_utils.macs(paper, 300) == 300 * frame_step + 15 * block_step + moe2(4096)
  # NetVLAD K = 256, H = 1024: per frame assignment + aggregation 2·(1024·256 + 128·128).
  netvlad = model_flags(model="NetVLADModelLF", **FULL)
  body = 300 * 2 * (1024 * 256 + 128 * 128) + 278528 * 1024 + 1024 * 1024
  assert body == 453378048 and model_utils.macs(netvlad, 300) == body + logistic(1024)
  assert model_utils.macs(netvlad, 30) == 30 * 2 * 278528 + 278528 * 1024 + 1024 * 1024 + logistic(1024)
  # Starter LSTM (one frame step per frame) and DBoF (30 drawn frames, whatever the video's length).
  lstm = model_flags(model="LstmModel", **FULL)
  assert model_utils.macs(lstm, 300) == 300 * frame_step + logistic(1024)
  dbof = model_flags(model="DbofModel", **FULL)
  assert model_utils.macs(dbof, 300) == model_utils.macs(dbof, 6) == \
      30 * 1152 * 8192 + 8192 * 1024 + logistic(1024)
  mix = model_flags(model="MixNeXtVladModel", mix_number=3, **FULL)
  assert model_utils.macs(mix, 300) == 3 * 1461018624 + 1152 * 3
  assert model_utils.macs(model_flags(model="MoeModel", frame_features=False, **FULL)) == moe2(1152)


def _graph_macs(flags, frames):
  """Σ over the inference graph's MatMul and BatchMatMulV2 ops of rows·inner·columns, read from their
  static shapes and transpose/adjoint attributes (one video; weight initialisers and the L2 penalty are
  not in these ops, which TensorFlow's profiler counts as well)."""
  with tf.Graph().as_default() as graph:
    model_utils.build_model(flags, tf.zeros([1, frames, sum(flags["feature_sizes"])]), tf.fill([1], frames),
                            is_training=False)
  total = 0
  for op in graph.get_operations():
    if op.type in ("MatMul", "BatchMatMulV2"):
      a, b = (tensor.shape.as_list() for tensor in op.inputs)
      adjoint_a = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
      adjoint_b = op.get_attr("transpose_b" if op.type == "MatMul" else "adj_y")
      rows, inner = (a[-1], a[-2]) if adjoint_a else (a[-2], a[-1])
      total += int(np.prod(a[:-2])) * rows * inner * (b[-2] if adjoint_b else b[-1])
  return total


@pytest.mark.parametrize("name,flags", [
    ("NeXtVLADModel", dict(groups=2, nextvlad_cluster_size=4, nextvlad_hidden_size=8, gating_reduction=2)),
    ("MixNeXtVladModel", dict(groups=2, nextvlad_cluster_size=4, nextvlad_hidden_size=8, mix_number=2)),
    ("NetVLADModelLF", dict(netvlad_cluster_size=4, netvlad_hidden_size=8)),
    ("NetVLADModelLF", dict(netvlad_cluster_size=4, netvlad_hidden_size=8, gating=False, lightvlad=True)),
    ("DbofModel", dict(dbof_cluster_size=16, dbof_hidden_size=8, iterations=5,
                       video_level_classifier_model="MoeModel")),
    ("FrameLevelLogisticModel", {})])
def test_multiply_adds_are_the_graphs_matmuls(name, flags):
  """For the models without a recurrence, model_utils.macs equals the matrix products in the graph."""
  flags = model_flags(model=name, num_classes=CLASSES, feature_sizes="6,2", **flags)
  for frames in (3, 7):
    assert model_utils.macs(flags, frames) == _graph_macs(flags, frames) > 0


def test_bad_family_flags_are_one_line_errors():
  for name, flags, message in (
      ("HierarchicalRnnModel", dict(hrnn_block_frames=0), "--hrnn_block_frames=0.*positive"),
      ("HierarchicalRnnModel", dict(hrnn_representation="c"), "--hrnn_representation='c'"),
      ("NetVLADModelLF", dict(netvlad_cluster_size=1), "at least 2 clusters"),
      ("LstmModel", dict(lstm_layers=0), "--lstm_layers=0"),
      ("DbofModel", dict(dbof_pooling_method="min"), "--dbof_pooling_method='min'"),
      ("DbofModel", dict(iterations=-1), "--iterations=-1")):
    with pytest.raises(InputError, match=message):
      model_utils.get_model(name, **flags)
  with pytest.raises(InputError, match="--model='Nope'"):
    model_utils.model_flags_from(dict({name: config.FLAGS[name].default for name in config.MODEL_FLAG_NAMES},
                                      model="Nope"))


def test_preprocessing_default_is_the_models_own_and_older_runs_keep_theirs():
  assert model_flags(model="NeXtVLADModel")["input_preprocessing"] == "whiten"
  assert model_flags(model="NetVLADModelLF")["input_preprocessing"] == "l2"
  assert model_flags(model="LogisticModel")["input_preprocessing"] == "none"
  assert model_flags(model="HierarchicalRnnModel", input_preprocessing="whiten")["input_preprocessing"] == "whiten"
  # The families' flags are recorded, and a model_flags.json written before them rebuilds with their
  # defaults (the models they configure did not exist).
  for name in ("hrnn_block_frames", "hrnn_student_block_frames", "hrnn_cells", "hrnn_layers",
               "hrnn_representation", "netvlad_cluster_size", "netvlad_hidden_size", "gating", "lightvlad",
               "lstm_cells", "lstm_layers", "iterations", "dbof_cluster_size", "dbof_hidden_size",
               "dbof_pooling_method", "dbof_add_batch_norm", "rep_projection"):
    assert name in config.MODEL_FLAG_NAMES and config.LEGACY_MODEL_FLAGS[name] == config.FLAGS[name].default


# -- training: every family as teacher, student and KD student -----------------------------------------------
FAMILIES = {
    "HierarchicalRnnModel": ["--hrnn_cells=8", "--hrnn_layers=1", "--hrnn_block_frames=6",
                             "--hrnn_student_block_frames=2"],
    "NetVLADModelLF": ["--netvlad_cluster_size=4", "--netvlad_hidden_size=8"],
    "LstmModel": ["--lstm_cells=8", "--lstm_layers=1"],
    "DbofModel": ["--dbof_cluster_size=16", "--dbof_hidden_size=8", "--iterations=6"],
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_trains_as_teacher_student_and_kd_and_evaluates(family, frame_data, tmp_path):
  """Teacher, student (k=4) and serial KD student; the KD student is evaluated, exported and served."""
  args = lambda name, *extra: train_args(frame_data, tmp_path / name, "--model=" + family, "--max_steps=3",
                                         *(FAMILIES[family] + list(extra)))
  assert train.main(args("teacher", "--model_type=teacher")) == 3
  assert train.main(args("student", "--model_type=student", "--k_frame=4")) == 3
  assert train.main(args("kd", "--model_type=kd", "--k_frame=4", "--frame_sampling=uniform",
                         "--teacher_checkpoint=" + str(tmp_path / "teacher"))) == 3
  kd_dir = str(tmp_path / "kd")
  assert config.load_model_flags(kd_dir)["model"] == family
  eval_lib.main(["eval.py", "--train_dir=" + kd_dir, "--eval_data_pattern=" + frame_data["validate"],
                 "--run_once", "--batch_size=64"])
  assert os.path.exists(os.path.join(kd_dir, "eval", "metrics.json"))
  exported = export_model.export(kd_dir, export_dir=str(tmp_path / "exported"))
  inference.main(["inference.py", "--saved_model_dir=" + exported, "--input_data_pattern=" +
                  frame_data["validate"], "--output_file=" + str(tmp_path / "out.csv"), "--batch_size=64"])
  assert len(open(str(tmp_path / "out.csv")).read().splitlines()) == 151


@pytest.mark.slow
def test_cross_family_kd_with_a_projection_a_cache_and_a_shared_classifier(frame_data, tmp_path):
  """An H-RNN student of a NeXtVLAD teacher (32-value representation) from its cache: refused without
  --rep_projection, trained with it; an H-RNN student that starts from its H-RNN teacher's classifier;
  parallel KD of an H-RNN."""
  import cache_teacher
  teacher_dir, cache_dir = tmp_path / "nextvlad", tmp_path / "cache"
  train.main(train_args(frame_data, teacher_dir, "--model_type=teacher", "--max_steps=2"))
  cache_teacher.main(["cache_teacher.py", "--teacher_checkpoint=" + str(teacher_dir), "--cache_dir=" +
                      str(cache_dir), "--input_data_pattern=" + frame_data["train"], "--batch_size=64"])
  hrnn = ["--model=HierarchicalRnnModel"] + FAMILIES["HierarchicalRnnModel"]
  kd = lambda name, *extra: train_args(frame_data, tmp_path / name, "--model_type=kd", "--k_frame=4",
                                       "--max_steps=2", *(hrnn + list(extra)))
  with pytest.raises(InputError, match="the teacher's has 32 values, the student's 16; .*--rep_projection"):
    train.main(kd("refused", "--teacher_cache=" + str(cache_dir)))
  assert train.main(kd("projected", "--teacher_cache=" + str(cache_dir), "--rep_projection")) == 2
  projection = tf.train.load_checkpoint(str(tmp_path / "projected" / "model.ckpt-2"))
  assert projection.get_variable_to_shape_map()["student/rep_projection/weights"] == [16, 32]
  hrnn_teacher = tmp_path / "hrnn_teacher"
  train.main(train_args(frame_data, hrnn_teacher, "--model_type=teacher", "--max_steps=2", *hrnn))
  run = train.prepare(_flags(kd("shared", "--teacher_checkpoint=" + str(hrnn_teacher),
                                "--share_teacher_classifier")))
  with run.parts.graph.as_default():
    student = {v.op.name: run.sess.run(v) for v in model_utils.scope_variables("student")}
  run.close()
  teacher = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(hrnn_teacher)))
  for name, value in student.items():
    same = np.array_equal(value, teacher.get_tensor("teacher/" + name[len("student/"):]))
    assert same == name.startswith("student/classifier/"), name
  with pytest.raises(InputError, match="--share_teacher_classifier .*--kd_mode=serial"):
    train.main(kd("bad", "--kd_mode=parallel", "--share_teacher_classifier"))
  assert train.main(kd("parallel", "--kd_mode=parallel")) == 2
  assert kd_teacher.RECORD_FILE not in os.listdir(str(tmp_path / "parallel"))


def _flags(argv):
  train.FLAGS.unparse_flags()
  train.FLAGS(argv)
  return train.FLAGS
