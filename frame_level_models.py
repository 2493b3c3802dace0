"""Frame-level models besides NeXtVLAD, NetVLAD and H-RNN (the starter's FrameLevelLogisticModel, LstmModel and
DbofModel), and the frame preprocessing, masking and frame sampling they share."""

import os

import numpy as np
import tensorflow.compat.v1 as tf

import layers
import models
import video_level_models
from utils import InputError

# --input_preprocessing; "default" is each model's own (its DEFAULT_PREPROCESSING), resolved by model_utils.
PREPROCESSING = ("l2", "whiten", "none")
DBOF_POOLING = ("max", "average")
# The YouTube-8M PCA eigenvalues, shipped with the project (docs/BACKGROUND.md, "Data format"; source in
# docs/FIDELITY.md).
BUNDLED_EIGENVALS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "yt8m_pca", "eigenvals.npy")


def check_preprocessing(input_preprocessing):
  if input_preprocessing not in PREPROCESSING:
    raise InputError("--input_preprocessing=%r: expected one of %s"
                     % (input_preprocessing, ", ".join(PREPROCESSING)))


def load_eigenvals(eigenvals_path, rgb_size):
  """The first `rgb_size` YouTube-8M PCA eigenvalues from a .npy of shape (n, 1), n >= rgb_size;
  an empty path means the bundled yt8m_pca/eigenvals.npy."""
  eigenvals_path = eigenvals_path or BUNDLED_EIGENVALS
  if not tf.io.gfile.exists(eigenvals_path):
    raise InputError("--eigenvals_path=%r: file not found; --input_preprocessing=whiten needs the "
                     "YouTube-8M PCA eigenvalues (eigenvals.npy, shape (2048, 1))" % eigenvals_path)
  try:
    with tf.io.gfile.GFile(eigenvals_path, "rb") as f:
      eigenvals = np.load(f)
  except ValueError as error:
    raise InputError("--eigenvals_path=%s: not a .npy array (%s)" % (eigenvals_path, error))
  if eigenvals.ndim != 2 or eigenvals.shape[1] != 1 or eigenvals.shape[0] < rgb_size:
    raise InputError("--eigenvals_path=%s has shape %s, expected (n, 1) with n >= %d"
                     % (eigenvals_path, eigenvals.shape, rgb_size))
  return eigenvals[:rgb_size, 0].astype(np.float32)


def preprocess(frames, input_preprocessing, feature_sizes, eigenvals_path=""):
  """frames [B, M, D] -> [B, M, D].

  whiten (the seed's and NeXtVLAD's): reverse whitening of the first (rgb) feature,
  (x - 4/512) * (sqrt(eigenvals) + 1e-4), the others unchanged, padded frames included (they become
  constant non-zero rows); l2: each frame (all features concatenated) scaled to unit L2 norm (the
  starter's frame models); none: as read.
  """
  check_preprocessing(input_preprocessing)
  if input_preprocessing == "l2":
    return tf.nn.l2_normalize(frames, axis=-1)
  if input_preprocessing == "whiten":
    rgb_size = int(feature_sizes[0])
    scale = np.sqrt(load_eigenvals(eigenvals_path, rgb_size)) + 1e-4
    rgb = (frames[:, :, :rgb_size] - 4.0 / 512.0) * scale
    return tf.concat([rgb, frames[:, :, rgb_size:]], axis=-1)
  return frames


def frame_mask(num_frames, frames):
  """[B, M] float mask, 1 for the first num_frames of each video, for M = frames' (dynamic) length."""
  lengths = tf.cast(tf.reshape(num_frames, [-1]), tf.int32)
  return tf.sequence_mask(lengths, tf.shape(frames)[1], dtype=tf.float32)


def sample_frames(frames, num_frames, count, is_training):
  """`count` of each video's valid frames, with replacement: frames [B, M, D] -> ([B, count, D], mask
  [B, count], 1 where the video has a frame). Training: positions floor(u·n), u uniform in [0, 1) (the
  starter's random frames); otherwise the fixed positions floor((2i + 1)·n / (2·count)), i < count, so
  that evaluation, inference and an export give a video the same output every time."""
  n = tf.cast(tf.reshape(num_frames, [-1, 1]), tf.int32)                        # [B, 1]
  if is_training:
    positions = tf.cast(tf.random.uniform([tf.shape(frames)[0], count]) * tf.cast(n, tf.float32),
                        tf.int32)
  else:
    positions = (2 * tf.range(count)[None, :] + 1) * n // (2 * count)
  positions = tf.minimum(positions, tf.maximum(n - 1, 0))                       # [B, count]
  mask = tf.cast(tf.tile(n > 0, [1, count]), tf.float32)
  return tf.gather(frames, positions, batch_dims=1), mask


class FrameLevelLogisticModel(models.BaseModel):
  """Mean of the (preprocessed) valid frames -> LogisticModel. Its representation is the mean frame;
  no batch norm, no dropout."""

  DEFAULT_PREPROCESSING = "whiten"

  def __init__(self, feature_sizes=(1024, 128), input_preprocessing="whiten", eigenvals_path="",
               l2_penalty=1e-8, **unused_hparams):
    check_preprocessing(input_preprocessing)
    self.feature_sizes = [int(size) for size in feature_sizes]
    self.input_preprocessing = input_preprocessing
    self.eigenvals_path = eigenvals_path
    self.l2_penalty = float(l2_penalty)

  def create_model(self, model_input, num_frames, vocab_size, is_training, **unused_params):
    frames = preprocess(model_input, self.input_preprocessing, self.feature_sizes,
                        self.eigenvals_path)
    mask = frame_mask(num_frames, frames)
    count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
    average = tf.reduce_sum(frames * mask[:, :, None], axis=1) / count
    classifier = video_level_models.LogisticModel(l2_penalty=self.l2_penalty)
    return classifier.create_model(average, vocab_size, is_training=is_training)

  def macs(self, frames, vocab_size):
    return sum(self.feature_sizes) * vocab_size


class FrameModel(models.BaseModel):
  """What LstmModel, DbofModel, HierarchicalRnnModel and NetVLADModelLF share: the preprocessing (by
  default L2 normalisation of every rgb‖audio frame, as the starter, WILLOW and the paper's code do), the
  frame mask, the batch-norm decay, and the classifier (--video_level_classifier_model, scope
  classifier/) whose input is the `representation`."""

  DEFAULT_PREPROCESSING = "l2"

  def __init__(self, feature_sizes=(1024, 128), input_preprocessing="l2", eigenvals_path="",
               video_level_classifier_model="LogisticModel", l2_penalty=1e-5, moe_num_mixtures=2,
               moe_prob_gating=False, batchnorm_decay=0.999, **unused_hparams):
    check_preprocessing(input_preprocessing)
    self.feature_sizes = [int(size) for size in feature_sizes]
    self.input_preprocessing, self.eigenvals_path = input_preprocessing, eigenvals_path
    self.batchnorm_decay = float(batchnorm_decay)
    self.classifier = video_level_models.get_classifier(
        video_level_classifier_model, l2_penalty=l2_penalty, moe_num_mixtures=moe_num_mixtures,
        moe_prob_gating=moe_prob_gating, batchnorm_decay=batchnorm_decay)

  def _frames(self, model_input, num_frames):
    frames = preprocess(model_input, self.input_preprocessing, self.feature_sizes, self.eigenvals_path)
    return frames, frame_mask(num_frames, frames)

  def _classify(self, representation, vocab_size, is_training):
    with tf.variable_scope("classifier"):
      output = self.classifier.create_model(representation, vocab_size, is_training=is_training)
    output["representation"] = representation
    return output


class LstmModel(FrameModel):
  """The starter's LstmModel: a stack of --lstm_layers LSTM layers of --lstm_cells units over the valid
  frames (layers.lstm); the representation is the top layer's final h [B, cells]. Scopes: lstm/,
  classifier/."""

  def __init__(self, lstm_cells=1024, lstm_layers=2, **hparams):
    self.cells, self.num_layers = int(lstm_cells), int(lstm_layers)
    if self.cells < 1 or self.num_layers < 1:
      raise InputError("--lstm_cells=%s, --lstm_layers=%s: expected positive integers"
                       % (lstm_cells, lstm_layers))
    super(LstmModel, self).__init__(**hparams)

  def create_model(self, model_input, num_frames, vocab_size, is_training, **unused_params):
    frames, mask = self._frames(model_input, num_frames)                        # [B, M, D], [B, M]
    top = layers.lstm(frames, mask, self.cells, self.num_layers, "lstm", emit="h")  # [B, cells]
    return self._classify(top, vocab_size, is_training)

  def macs(self, frames, vocab_size):
    """Multiply-adds per video of `frames` frames: one LSTM step per frame, the classifier."""
    return (frames * layers.lstm_macs(sum(self.feature_sizes), self.cells, self.num_layers)
            + self.classifier.macs(self.cells, vocab_size))


class DbofModel(FrameModel):
  """The starter's deep bag of frames. Per video, R = --iterations frames drawn from its valid ones with
  replacement (sample_frames; 0: every frame read, padding masked), each D-dim frame x:
    a = relu6(BN(BN(x) · W_c)),  W_c [D, C] (C = --dbof_cluster_size)       (input_bn, cluster_bn)
    v = max (or mean) over the R frames of a                                (--dbof_pooling_method)
    E = relu6(BN(v · W_h)),      W_h [C, H] (H = --dbof_hidden_size)       (hidden1_bn)
  -> classifier(E); E is the representation. Without --dbof_add_batch_norm, biases replace the two
  inner batch norms and the input is not normalised. Batch-norm statistics count real frames only.
  Scopes: input_bn/, cluster/, cluster_bn/ (or cluster/biases), hidden1/, hidden1_bn/, classifier/."""

  def __init__(self, iterations=30, dbof_cluster_size=8192, dbof_hidden_size=1024,
               dbof_pooling_method="max", dbof_add_batch_norm=True, **hparams):
    self.iterations, self.cluster_size = int(iterations), int(dbof_cluster_size)
    self.hidden_size, self.pooling = int(dbof_hidden_size), dbof_pooling_method
    self.add_batch_norm = bool(dbof_add_batch_norm)
    if self.iterations < 0 or self.cluster_size < 1 or self.hidden_size < 1:
      raise InputError("--iterations=%s, --dbof_cluster_size=%s, --dbof_hidden_size=%s: expected 0 or "
                       "more frames and positive sizes" % (iterations, dbof_cluster_size, dbof_hidden_size))
    if dbof_pooling_method not in DBOF_POOLING:
      raise InputError("--dbof_pooling_method=%r: expected one of %s"
                       % (dbof_pooling_method, ", ".join(DBOF_POOLING)))
    super(DbofModel, self).__init__(**hparams)

  def _layer(self, inputs, units, mask, is_training, scope):
    """relu6(BN(inputs · W)) (no bias), or relu6(inputs · W + b) without batch norm."""
    outputs = layers.dense(inputs, units, use_bias=not self.add_batch_norm, scope=scope)
    if self.add_batch_norm:
      outputs = layers.batch_norm(outputs, is_training, scope + "_bn", decay=self.batchnorm_decay,
                                  mask=mask)
    return tf.nn.relu6(outputs)

  def create_model(self, model_input, num_frames, vocab_size, is_training, **unused_params):
    frames, mask = self._frames(model_input, num_frames)                        # [B, M, D], [B, M]
    if self.iterations:
      frames, mask = sample_frames(frames, num_frames, self.iterations, is_training)  # [B, R, D], [B, R]
    depth = frames.shape.as_list()[-1]
    batch, count = tf.shape(frames)[0], tf.shape(frames)[1]
    rows, row_mask = tf.reshape(frames, [-1, depth]), tf.reshape(mask, [-1])    # [B·R, D], [B·R]
    if self.add_batch_norm:
      rows = layers.batch_norm(rows, is_training, "input_bn", decay=self.batchnorm_decay, mask=row_mask)
    activation = self._layer(rows, self.cluster_size, row_mask, is_training, "cluster")  # [B·R, C]
    activation = tf.reshape(activation, [batch, count, self.cluster_size]) * mask[:, :, None]
    if self.pooling == "max":
      pooled = tf.reduce_max(activation, axis=1)            # relu6 >= 0: padding (0) never wins
    else:
      pooled = tf.reduce_sum(activation, axis=1) / tf.maximum(tf.reduce_sum(mask, 1, keepdims=True), 1.0)
    hidden = self._layer(pooled, self.hidden_size, None, is_training, "hidden1")  # [B, H]
    return self._classify(hidden, vocab_size, is_training)

  def macs(self, frames, vocab_size):
    """Multiply-adds per video of `frames` frames (R of them with --iterations=R)."""
    rows = self.iterations or frames
    return (rows * sum(self.feature_sizes) * self.cluster_size + self.cluster_size * self.hidden_size
            + self.classifier.macs(self.hidden_size, vocab_size))
