"""Run with the seed's flags, this code computes what the seed computes: each formula against the NumPy
transcription of the seed in seed_numpy.py (docs/FIDELITY.md lists every difference and its flag)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import eval_util
import frame_level_models
import import_checkpoint
import kd_losses
import model_utils
import readers
import seed_numpy
import helpers
import train

tf.disable_v2_behavior()

SMALL = dict(model="NeXtVLADModel", model_type="teacher", num_classes=6, feature_sizes=[32, 8],
             groups=4, nextvlad_cluster_size=4, nextvlad_hidden_size=16, expansion=2,
             gating_reduction=4, drop_rate=0.0, l2_penalty=1e-5, video_level_classifier_model="LogisticModel",
             input_preprocessing="whiten", eigenvals_path="", moe_num_mixtures=2)
def _frames(rng, batch, max_frames, depth, valid):
  """Dequantized-looking frames with zero rows past each video's length (the readers' padding)."""
  frames = rng.uniform(-2, 2, (batch, max_frames, depth)).astype(np.float32)
  frames[np.arange(max_frames)[None, :] >= valid[:, None]] = 0.0
  return frames


def _forward(model_flags, frames, valid, is_training, rng):
  """This code's model on `frames` with random weights; (outputs, weights by seed name)."""
  with tf.Graph().as_default():
    inputs = tf.placeholder(tf.float32, [None, None, frames.shape[-1]])
    num_frames = tf.placeholder(tf.int32, [None])
    outputs = model_utils.build_model(model_flags, inputs, num_frames, is_training=is_training)
    with tf.Session() as sess:
      values = helpers.randomise(sess, tf.global_variables(), rng)
      weights = {import_checkpoint.seed_name(name): value.astype(np.float64)
                 for name, value in values.items()}
      return sess.run(outputs, {inputs: frames, num_frames: valid}), weights


def test_whitening_matches_the_seed_including_padded_rows():
  rng = np.random.RandomState(0)
  valid = np.array([5, 2, 0])
  frames = _frames(rng, 3, 5, 40, valid)
  eigenvals = frame_level_models.load_eigenvals("", 32)
  with tf.Graph().as_default(), tf.Session() as sess:
    got = sess.run(frame_level_models.preprocess(tf.constant(frames), "whiten", [32, 8]))
  expected = seed_numpy.whiten(frames.astype(np.float64), eigenvals.astype(np.float64), 32)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert np.all(got[1, 2:, :32] != 0) and np.all(got[1, 2:, 32:] == 0)   # padded rgb rows are not zero


@pytest.mark.parametrize("is_training", [False, True])
def test_nextvlad_forward_matches_the_seed(is_training):
  """Inference mode: moving statistics. Training mode (no dropout): every batch norm takes batch
  statistics, and the cluster batch norm's include the padded frames' rows, as in the seed."""
  rng = np.random.RandomState(1)
  valid = np.array([7, 3, 1, 6])
  frames = _frames(rng, 4, 7, 40, valid)
  got, weights = _forward(SMALL, frames, valid, is_training, rng)
  eigenvals = frame_level_models.load_eigenvals("", 32).astype(np.float64)
  representation, logits = seed_numpy.nextvlad_model(
      seed_numpy.whiten(frames.astype(np.float64), eigenvals, 32), valid, weights, rgb_size=32,
      cluster_size=4, groups=4, expansion=2, training=is_training)
  np.testing.assert_allclose(got["representation"], representation, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["predictions"], seed_numpy.sigmoid(logits), rtol=1e-5, atol=1e-6)


def test_masking_padding_out_of_batch_norm_is_a_different_model():
  rng = np.random.RandomState(1)
  valid = np.array([7, 3, 1, 6])
  frames = _frames(rng, 4, 7, 40, valid)
  seed_like, _ = _forward(SMALL, frames, valid, True, np.random.RandomState(2))
  masked, _ = _forward(dict(SMALL, bn_mask_padding=True), frames, valid, True, np.random.RandomState(2))
  assert np.abs(seed_like["logits"] - masked["logits"]).max() > 1e-3


def test_kd_loss_matches_the_seed_at_its_batch_size():
  rng = np.random.RandomState(3)
  batch, classes, hidden = 80, 30, 12
  labels = (rng.rand(batch, classes) < 0.1).astype(np.float32)
  student = {"predictions": rng.rand(batch, classes).astype(np.float32),
             "representation": rng.randn(batch, hidden).astype(np.float32)}
  teacher = {"predictions": rng.rand(batch, classes).astype(np.float32),
             "representation": rng.randn(batch, hidden).astype(np.float32)}
  with tf.Graph().as_default(), tf.Session() as sess:
    import losses
    ce = losses.CrossEntropyLoss().calculate_loss(tf.constant(student["predictions"]), tf.constant(labels))
    total, _ = kd_losses.distillation_loss(
        ce, {k: tf.constant(v) for k, v in teacher.items()}, {k: tf.constant(v) for k, v in student.items()})
    got = sess.run(total)
  expected = seed_numpy.kd_student_loss(labels, student["predictions"], teacher["predictions"],
                                        student["representation"], teacher["representation"])
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_gradients_are_clipped_per_variable_like_the_seed():
  rng = np.random.RandomState(4)
  grads = [rng.randn(3, 4) * 2, rng.randn(5) * 0.1, rng.randn(2, 2) * 10]
  with tf.Graph().as_default(), tf.Session() as sess:
    variables = [tf.Variable(np.zeros_like(g), name="v%d" % i) for i, g in enumerate(grads)]
    clipped = train.clip_gradients([(tf.constant(g), v) for g, v in zip(grads, variables)], 1.0,
                                   "per_variable")
    got = sess.run([g for g, _ in clipped])
    global_clip = sess.run([g for g, _ in train.clip_gradients(
        [(tf.constant(g), v) for g, v in zip(grads, variables)], 1.0, "global")])
  for g, expected in zip(got, seed_numpy.clip_gradient_norms(grads, 1.0)):
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.sqrt(sum((g ** 2).sum() for g in global_clip)), 1.0, rtol=1e-5)


def test_perr_counts_a_video_without_labels_as_zero():
  rng = np.random.RandomState(5)
  predictions = rng.rand(6, 10)
  actuals = (rng.rand(6, 10) < 0.3).astype(np.float64)
  actuals[2] = 0.0
  actuals[0, :3] = 1.0
  expected = seed_numpy.precision_at_equal_recall_rate(predictions, actuals)
  assert abs(eval_util.calculate_precision_at_equal_recall_rate(predictions, actuals) - expected) < 1e-12
  metrics = eval_util.EvaluationMetrics(10, 20)
  metrics.accumulate(predictions[:4], actuals[:4], 0.0)
  metrics.accumulate(predictions[4:], actuals[4:], 0.0)
  assert abs(metrics.get()["avg_perr"] - expected) < 1e-12


@pytest.mark.parametrize("k", [6, 7, 40])
@pytest.mark.parametrize("num_frames", [300, 250, 20])
def test_strided_positions_are_the_seeds(k, num_frames):
  positions = seed_numpy.strided_positions(k)
  assert len(positions) == {6: 6, 7: 8, 40: 43}[k]
  assert readers.sampled_frame_count(k, "strided", 300) == len(positions)
  with tf.Graph().as_default(), tf.Session() as sess:
    indices, count = sess.run(readers.sample_frame_indices(tf.constant(num_frames), k, "strided", 300))
  real = positions[positions < num_frames]                 # the seed's mask[:, 0:300:step]
  assert count == len(real)
  np.testing.assert_array_equal(indices[:count], real)
  assert np.all(indices[count:] == num_frames)             # padding rows


def test_initialisers_follow_slims_formula_on_the_seed_size_model():
  flags = dict(SMALL, num_classes=3862, feature_sizes=[1024, 128], groups=8, nextvlad_cluster_size=128,
               nextvlad_hidden_size=2048, gating_reduction=8, drop_rate=0.5)
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    frames = tf.placeholder(tf.float32, [None, None, 1152])
    model_utils.build_model(flags, frames, tf.placeholder(tf.int32, [None]), is_training=True)
    weights = [v for v in tf.trainable_variables() if v.op.name.endswith(("weights", "centres"))]
    assert len(weights) == 2 * 4 + 4
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      for var in weights:
        shape = var.shape.as_list()
        fan_in = shape[-2] * int(np.prod(shape[:-2]))
        std = sess.run(tf.math.reduce_std(var))
        assert abs(std / seed_numpy.slim_truncated_std(fan_in) - 1) < 0.05, (var.op.name, std, fan_in)
      biases = sess.run([v for v in tf.trainable_variables() if v.op.name.endswith("biases")])
      assert all(not b.any() for b in biases)


@pytest.mark.parametrize("variance", ["seed", "biased"])
def test_moving_statistics_update_like_the_seed(variance):
  """One training step's batch-norm updates against seed_numpy: the seed's fused gating_bn moves its
  moving variance towards the Bessel-corrected n/(n-1)·var, every other layer towards the biased var
  (--batchnorm_variance=seed); --batchnorm_variance=biased uses the biased var everywhere."""
  rng = np.random.RandomState(5)
  valid = np.array([7, 3, 1, 6, 2])
  frames = _frames(rng, 5, 7, 40, valid)
  flags = dict(SMALL, batchnorm_decay=0.9, batchnorm_variance=variance)
  with tf.Graph().as_default():
    inputs = tf.placeholder(tf.float32, [None, None, 40])
    num_frames = tf.placeholder(tf.int32, [None])
    model_utils.build_model(flags, inputs, num_frames, is_training=True)
    moving = {v.op.name: v for v in tf.global_variables() if "moving_" in v.op.name}
    with tf.Session() as sess:
      values = helpers.randomise(sess, tf.global_variables(), rng)
      sess.run(tf.get_collection(tf.GraphKeys.UPDATE_OPS), {inputs: frames, num_frames: valid})
      got = {import_checkpoint.seed_name(name[len("teacher/"):]): value
             for name, value in sess.run(moving).items()}
  weights = {import_checkpoint.seed_name(name): value.astype(np.float64) for name, value in values.items()}
  stats = {}
  eigenvals = frame_level_models.load_eigenvals("", 32).astype(np.float64)
  seed_numpy.nextvlad_model(seed_numpy.whiten(frames.astype(np.float64), eigenvals, 32), valid, weights,
                            rgb_size=32, cluster_size=4, groups=4, expansion=2, training=True, stats=stats)
  expected = seed_numpy.moving_statistics_update(
      weights, stats, 0.9, seed_numpy.FUSED_SCOPES if variance == "seed" else ())
  assert sorted(got) == sorted(expected) and len(got) == 2 * 6
  for name in got:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
  before, after = weights["gating_bn/moving_variance"], got["gating_bn/moving_variance"]
  ratio = (after - 0.9 * before) / (0.1 * stats["gating_bn"][1])   # the factor on the batch variance
  np.testing.assert_allclose(ratio, 5 / 4 if variance == "seed" else 1.0, rtol=1e-4)
