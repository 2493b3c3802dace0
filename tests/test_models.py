"""Models, layers and label losses: parameter counts at the seed's configuration, NeXtVLAD against a
brute-force NumPy version of its definition, padding invariance, batch norm, losses, registries."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import frame_level_models
import layers
import losses
import model_utils
import video_level_models
from helpers import randomise
from utils import InputError

tf.disable_v2_behavior()

SEED_HPARAMS = dict(feature_sizes=[1024, 128], groups=8, nextvlad_cluster_size=128,
                    nextvlad_hidden_size=2048, expansion=2, gating_reduction=8, drop_rate=0.5,
                    video_level_classifier_model="LogisticModel", l2_penalty=1e-5)
SMALL_HPARAMS = dict(feature_sizes=[32, 8], groups=2, nextvlad_cluster_size=4, nextvlad_hidden_size=16,
                     expansion=2, gating_reduction=4, drop_rate=0.0, l2_penalty=1e-3)
SMALL_CLASSES = 5


def _build(hparams, vocab_size, is_training, scope="teacher", name="NeXtVLADModel"):
  """Placeholders [B, M, D] (B and M dynamic) and num_frames [B], and the model's outputs."""
  frames = tf.placeholder(tf.float32, [None, None, sum(hparams["feature_sizes"])])
  num_frames = tf.placeholder(tf.int32, [None])
  with tf.variable_scope(scope):
    outputs = model_utils.get_model(name, **hparams).create_model(frames, num_frames, vocab_size,
                                                             is_training)
  return frames, num_frames, outputs


def _size(variables):
  return sum(int(np.prod(v.shape.as_list())) for v in variables)


def test_seed_configuration_parameter_counts():
  with tf.Graph().as_default():
    _, _, outputs = _build(dict(SEED_HPARAMS, unknown_flag="ignored"), 3862, is_training=True)
    trainable = tf.trainable_variables()
    moving = [v for v in tf.global_variables() if "/moving_" in v.op.name]
    assert _size(trainable) == 88889378
    assert _size(moving) == 80896
    assert not set(moving) & set(trainable)
    assert len(tf.get_collection(tf.GraphKeys.UPDATE_OPS)) == 2 * 6  # 2 per branch, hidden, gating

    def part(prefix):
      return _size([v for v in trainable if v.op.name.startswith("teacher/" + prefix)])
    assert part("video_VLAD/") == 4313096
    assert part("audio_VLAD/") == 112388
    assert part("hidden/") == 75497472
    assert part("hidden_bn/") == 4096
    assert part("gating/") == 1049088
    assert part("classifier/logistic/") == 7913238
    assert outputs["representation"].shape.as_list() == [None, 2048]
    assert outputs["logits"].shape.as_list() == outputs["predictions"].shape.as_list() == [None, 3862]
    # The classifier's L2 penalty is the only regularisation loss.
    assert len(tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)) == 1


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _np_batch_norm(x, p, scope):
  return ((x - p[scope + "/moving_mean"]) / np.sqrt(p[scope + "/moving_variance"] + 1e-3)
          * p[scope + "/gamma"] + p[scope + "/beta"])


def _np_nextvlad(frames, valid, p, scope, clusters, groups, expansion=2):
  """docs/BACKGROUND.md, NeXtVLAD: one video at a time, with explicit loops over frames, groups and clusters."""
  size = frames.shape[1] * expansion // groups
  vlad = np.zeros((size, clusters))
  for i, frame in enumerate(frames):
    expanded = frame @ p[scope + "/expansion/weights"] + p[scope + "/expansion/biases"]
    attention = _sigmoid(expanded @ p[scope + "/group_attention/weights"]
                         + p[scope + "/group_attention/biases"]) * (1.0 if i < valid else 0.0)
    scores = _np_batch_norm(expanded @ p[scope + "/cluster_assignment/weights"], p,
                            scope + "/assignment_bn")
    for g in range(groups):
      group_scores = scores[g * clusters:(g + 1) * clusters]
      softmax = np.exp(group_scores - group_scores.max())
      softmax /= softmax.sum()
      chunk = expanded[g * size:(g + 1) * size]
      for k in range(clusters):
        vlad[:, k] += softmax[k] * attention[g] * (chunk - p[scope + "/cluster_centres"][0, :, k])
  for k in range(clusters):
    vlad[:, k] /= np.sqrt(max(np.sum(vlad[:, k] ** 2), 1e-12))
  return _np_batch_norm(vlad.reshape(-1), p, scope + "/vlad_bn")


def _np_model(frames, valid, p, hp):
  """The whole NeXtVLADModel (--input_preprocessing=l2, inference mode, LogisticModel) for one video."""
  frames = frames / np.sqrt(np.maximum(np.sum(frames ** 2, axis=1, keepdims=True), 1e-12))
  rgb_size = hp["feature_sizes"][0]
  vlad = np.concatenate([
      _np_nextvlad(frames[:, :rgb_size], valid, p, "video_VLAD", hp["nextvlad_cluster_size"],
                   hp["groups"]),
      _np_nextvlad(frames[:, rgb_size:], valid, p, "audio_VLAD", hp["nextvlad_cluster_size"] // 2,
                   hp["groups"] // 2)])
  hidden = _np_batch_norm(vlad @ p["hidden/weights"], p, "hidden_bn")
  squeeze = np.maximum(_np_batch_norm(hidden @ p["gating/squeeze/weights"], p, "gating/squeeze_bn"), 0)
  representation = hidden * _sigmoid(squeeze @ p["gating/excite/weights"])
  logits = representation @ p["classifier/logistic/weights"] + p["classifier/logistic/biases"]
  return representation, logits


def test_nextvlad_matches_numpy_definition():
  rng = np.random.RandomState(0)
  video = rng.randn(3, 7, 40).astype(np.float32)
  valid = np.array([7, 3, 1], np.int32)
  with tf.Graph().as_default():
    frames, num_frames, outputs = _build(dict(SMALL_HPARAMS, input_preprocessing="l2"), SMALL_CLASSES,
                                         is_training=False)
    with tf.Session() as sess:
      params = randomise(sess, tf.global_variables(), rng)
      got = sess.run(outputs, {frames: video, num_frames: valid})
  for b in range(3):
    representation, logits = _np_model(video[b].astype(np.float64), valid[b], params, SMALL_HPARAMS)
    np.testing.assert_allclose(got["representation"][b], representation, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["logits"][b], logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["predictions"][b], _sigmoid(logits), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("is_training", [False, True])
def test_padded_frames_do_not_change_the_output(is_training):
  """Zero or garbage frames past num_frames, and any number M of input frames, give the same outputs,
  at inference, and in training with --bn_mask_padding (batch statistics over real frames only; no
  dropout here). The seed's training-mode statistics count padded rows: tests/test_fidelity.py."""
  rng = np.random.RandomState(1)
  valid = np.array([6, 2, 4], np.int32)
  video = rng.randn(3, 6, 40).astype(np.float32)
  video[1, 2:] = 0.0
  video[2, 4:] = 0.0
  long_video = np.zeros((3, 300, 40), np.float32)
  long_video[:, :6] = video
  garbage = rng.randn(3, 9, 40).astype(np.float32) * 3.0
  garbage[:, :6][np.arange(6)[None, :] < valid[:, None]] = video[np.arange(6)[None, :] < valid[:, None]]
  with tf.Graph().as_default():
    frames, num_frames, outputs = _build(dict(SMALL_HPARAMS, bn_mask_padding=True), SMALL_CLASSES,
                                         is_training=is_training)
    with tf.Session() as sess:
      randomise(sess, tf.global_variables(), rng)
      results = [sess.run(outputs, {frames: x, num_frames: valid}) for x in (video, long_video, garbage)]
  for other in results[1:]:
    for key in ("logits", "predictions", "representation"):
      np.testing.assert_allclose(other[key], results[0][key], rtol=1e-5, atol=1e-5)


def test_batch_norm_updates_only_in_training():
  rng = np.random.RandomState(2)
  data = (rng.randn(6, 5, 3) * 2.0 + 1.5).astype(np.float32)
  mask = np.ones((6, 5), np.float32)
  mask[:, 3:] = 0.0
  with tf.Graph().as_default():
    inputs = tf.constant(data)
    with tf.variable_scope("bn", reuse=tf.AUTO_REUSE):
      inference = layers.batch_norm(inputs, False)
      assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)
      training = layers.batch_norm(inputs, True, decay=0.9, mask=tf.constant(mask))
    updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
    assert len(updates) == 2
    names = sorted(v.op.name for v in tf.global_variables())
    assert names == ["bn/batch_norm/beta", "bn/batch_norm/gamma", "bn/batch_norm/moving_mean",
                     "bn/batch_norm/moving_variance"]
    assert len(tf.trainable_variables()) == 2
    with pytest.raises(TypeError, match="Python bool"):
      layers.batch_norm(inputs, tf.constant(True))
    real = data[:, :3].reshape(-1, 3)
    mean, variance = real.mean(axis=0), real.var(axis=0)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      np.testing.assert_allclose(sess.run(inference), data / np.sqrt(1 + 1e-3), rtol=1e-5)
      np.testing.assert_allclose(sess.run(training)[:, :3], (data[:, :3] - mean) / np.sqrt(variance + 1e-3),
                                 rtol=1e-4, atol=1e-5)
      sess.run(updates)
      moving_mean, moving_variance = sess.run(["bn/batch_norm/moving_mean:0",
                                               "bn/batch_norm/moving_variance:0"])
      np.testing.assert_allclose(moving_mean, 0.1 * mean, rtol=1e-5)
      np.testing.assert_allclose(moving_variance, 0.9 + 0.1 * variance, rtol=1e-5)
      for _ in range(200):
        sess.run(updates)
      np.testing.assert_allclose(sess.run("bn/batch_norm/moving_mean:0"), mean, rtol=1e-4)


def test_dropout_only_in_training():
  with tf.Graph().as_default():
    ones = tf.ones([1000])
    assert layers.dropout(ones, 0.5, False) is ones
    with tf.Session() as sess:
      dropped = sess.run(layers.dropout(ones, 0.5, True))
  assert set(np.unique(dropped)) <= {0.0, 2.0} and 300 < np.sum(dropped == 0) < 700


def test_label_losses_match_numpy():
  rng = np.random.RandomState(3)
  predictions = rng.rand(4, 6).astype(np.float32)
  labels = (rng.rand(4, 6) < 0.4).astype(np.float32)
  labels[0] = 0.0  # a video without labels
  cross_entropy = -(labels * np.log(predictions + 1e-8) + (1 - labels) * np.log(1 - predictions + 1e-8))
  hinge = np.maximum(0.0, 1.0 - (2 * labels - 1) * predictions)
  targets = labels / np.maximum(labels.sum(axis=1, keepdims=True), 1e-7)
  log_softmax = predictions - np.log(np.exp(predictions).sum(axis=1, keepdims=True))
  expected = {"CrossEntropyLoss": cross_entropy.sum(axis=1).mean(), "HingeLoss": hinge.sum(axis=1).mean(),
              "SoftmaxLoss": -(targets * log_softmax).sum(axis=1).mean()}
  with tf.Graph().as_default(), tf.Session() as sess:
    for name, value in expected.items():
      loss = losses.get_loss(name).calculate_loss(tf.constant(predictions), tf.constant(labels))
      np.testing.assert_allclose(sess.run(loss), value, rtol=1e-5)


def test_video_level_models():
  """LogisticModel's L2 penalty (tf.nn.l2_loss semantics) and MoeModel's mixture and logits."""
  rng = np.random.RandomState(4)
  x = rng.randn(3, 6).astype(np.float32)
  with tf.Graph().as_default():
    logistic = model_utils.get_model("LogisticModel", l2_penalty=0.25).create_model(
        tf.constant(x), 4, num_frames=None, is_training=True)
    with tf.variable_scope("moe"):
      moe = model_utils.get_model("MoeModel", moe_num_mixtures=3).create_model(tf.constant(x), 4)
    penalties = tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      variables = {v.op.name: v for v in tf.global_variables()}
      biases = rng.randn(4).astype(np.float32)
      variables["logistic/biases"].load(biases, sess)
      weights = sess.run(variables["logistic/weights"])
      gates, experts, expert_biases = sess.run([variables["moe/gates/weights"],
                                                variables["moe/experts/weights"],
                                                variables["moe/experts/biases"]])
      got_logistic, got_moe, got_penalty = sess.run([logistic, moe, penalties[0]])
  assert len(penalties) == 3 and sorted(variables) == [
      "logistic/biases", "logistic/weights", "moe/experts/biases", "moe/experts/weights",
      "moe/gates/weights"]
  np.testing.assert_allclose(got_penalty, 0.25 * (np.sum(weights ** 2) + np.sum(biases ** 2)) / 2, rtol=1e-5)
  np.testing.assert_allclose(got_logistic["logits"], x @ weights + biases, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got_logistic["representation"], x)
  gate = np.exp((x @ gates).reshape(3, 4, 4))
  gate /= gate.sum(axis=2, keepdims=True)
  p = np.sum(gate[:, :, :3] * _sigmoid((x @ experts + expert_biases).reshape(3, 4, 3)), axis=2)
  np.testing.assert_allclose(got_moe["predictions"], p, rtol=1e-5)
  np.testing.assert_allclose(got_moe["logits"], np.log(p / (1 - p)), rtol=1e-4, atol=1e-5)


def test_moe_probability_gating_matches_numpy():
  """--moe_prob_gating in inference mode: p' = p * sigmoid(BN(p W)) with the moving statistics, its
  exact logits, the C x C gating weights in the cost and the flag recorded in the classifier."""
  rng = np.random.RandomState(5)
  x = rng.randn(3, 6).astype(np.float32)
  with tf.Graph().as_default():
    moe = model_utils.get_model("MoeModel", moe_num_mixtures=2, moe_prob_gating=True)
    out = moe.create_model(tf.constant(x), 4, is_training=False)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      variables = {v.op.name: v for v in tf.global_variables()}
      statistics = {"gating_prob/batch_norm/" + name: rng.uniform(low, high, 4).astype(np.float32)
                    for name, low, high in (("moving_mean", -0.5, 0.5), ("moving_variance", 0.5, 2.0),
                                            ("beta", -0.5, 0.5), ("gamma", 0.5, 1.5))}
      for name, value in statistics.items():
        variables[name].load(value, sess)
      values = sess.run({name: variables[name] for name in
                         ("gates/weights", "experts/weights", "experts/biases", "gating_prob/weights")})
      got = sess.run(out)
  assert sorted(variables) == sorted(["experts/biases", "experts/weights", "gates/weights",
                                      "gating_prob/weights"] + list(statistics))
  gate = np.exp((x @ values["gates/weights"]).reshape(3, 4, 3))
  gate /= gate.sum(axis=2, keepdims=True)
  p = np.sum(gate[:, :, :2] * _sigmoid((x @ values["experts/weights"] + values["experts/biases"])
                                       .reshape(3, 4, 2)), axis=2)
  z = p @ values["gating_prob/weights"]
  bn = lambda name: statistics["gating_prob/batch_norm/" + name]
  z = (z - bn("moving_mean")) / np.sqrt(bn("moving_variance") + 1e-3) * bn("gamma") + bn("beta")
  gated = p * _sigmoid(z)
  np.testing.assert_allclose(got["predictions"], gated, rtol=1e-5)
  np.testing.assert_allclose(got["logits"], np.log(gated / (1 - gated)), rtol=1e-4, atol=1e-5)
  assert moe.macs(6, 4) == 6 * 4 * 5 + 4 * 4


def test_registries_reject_unknown_names():
  with pytest.raises(InputError, match="--model='Nope'.*DbofModel, FrameLevelLogisticModel, "
                                       "HierarchicalRnnModel, LogisticModel, LstmModel, MixNeXtVladModel, "
                                       "MoeModel, NeXtVLADModel, NetVLADModelLF"):
    model_utils.get_model("Nope")
  with pytest.raises(InputError, match="--label_loss='Nope'.*CrossEntropyLoss, HingeLoss, SoftmaxLoss"):
    losses.get_loss("Nope")
  with pytest.raises(InputError, match="--video_level_classifier_model='Nope'"):
    model_utils.get_model("NeXtVLADModel", video_level_classifier_model="Nope")
  with pytest.raises(InputError, match="--input_preprocessing='pca'"):
    model_utils.get_model("NeXtVLADModel", input_preprocessing="pca")
  with pytest.raises(InputError, match="audio_VLAD.*--groups=1"):
    model_utils.get_model("NeXtVLADModel", groups=1)
  assert isinstance(model_utils.get_model("MoeModel", any_flag=1), video_level_models.MoeModel)


def test_whitening_and_frame_level_logistic(tmp_path):
  rng = np.random.RandomState(5)
  eigenvals = (rng.rand(12, 1) * 3).astype(np.float32)
  path = str(tmp_path / "eigenvals.npy")
  np.save(path, eigenvals)
  video = rng.randn(2, 4, 10).astype(np.float32)
  valid = np.array([4, 2], np.int32)
  whitened = video.copy()
  whitened[:, :, :8] = (video[:, :, :8] - 4.0 / 512) * (np.sqrt(eigenvals[:8, 0]) + 1e-4)
  hparams = dict(feature_sizes=[8, 2], input_preprocessing="whiten", eigenvals_path=path)
  with tf.Graph().as_default():
    got = frame_level_models.preprocess(tf.constant(video), "whiten", [8, 2], path)
    frames, num_frames, outputs = _build(hparams, 3, True, name="FrameLevelLogisticModel")
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      got, representation = sess.run([got, outputs["representation"]], {frames: video, num_frames: valid})
  np.testing.assert_allclose(got, whitened, rtol=1e-6)
  np.testing.assert_allclose(representation, [whitened[0].mean(axis=0), whitened[1, :2].mean(axis=0)],
                             rtol=1e-5, atol=1e-6)
  np.save(str(tmp_path / "flat.npy"), eigenvals[:, 0])
  for bad, message in ((str(tmp_path / "missing.npy"), "file not found"),
                       (str(tmp_path / "flat.npy"), r"has shape \(12,\)")):
    with tf.Graph().as_default(), pytest.raises(InputError, match="--eigenvals_path=.*" + message):
      _build(dict(SMALL_HPARAMS, input_preprocessing="whiten", eigenvals_path=bad), 3, False)
