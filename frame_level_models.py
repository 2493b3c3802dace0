"""Frame-level models besides NeXtVLAD, and the frame preprocessing and masking they all share."""

import os

import numpy as np
import tensorflow.compat.v1 as tf

import models
import video_level_models
from utils import InputError

PREPROCESSING = ("l2", "whiten", "none")
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


class FrameLevelLogisticModel(models.BaseModel):
  """Mean of the (preprocessed) valid frames -> LogisticModel. Its representation is the mean frame;
  no batch norm, no dropout."""

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
