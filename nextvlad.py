"""NeXtVLAD (Lin, Xiao, Fan, 2018): the aggregation layer and the video classifier built on it.

Layer, for frames x [B, M, N] with expansion λ, groups G, clusters K:
  ẋ = dense(x) [λN]; group attention α = sigmoid(dense(ẋ)) [G] · frame mask;
  assignment a = softmax_K(BN(ẋ W)) [G, K] · α; each ẋ split into G chunks x̃_g of λN/G;
  vlad_k = Σ_{frames, groups} a_gk (x̃_g - c_k); L2 over λN/G per cluster; flatten; BN.
Model: one layer per feature (the first with K, G; the others with K/2, G/2 as NeXtVLAD's audio
branch), concat, dropout, dense to H (no bias) + BN, SE context gating -> the representation,
then the video-level classifier. The frame mask comes from `num_frames` for any number of input
frames M, so a student's k frames and a teacher's 300 use the same code.
"""

import numpy as np
import tensorflow.compat.v1 as tf

import layers
import models
import video_level_models
from utils import InputError

PREPROCESSING = ("l2", "whiten", "none")


def _load_eigenvals(eigenvals_path, rgb_size):
  if not eigenvals_path or not tf.io.gfile.exists(eigenvals_path):
    raise InputError("--eigenvals_path=%r: file not found; --input_preprocessing=whiten needs the "
                     "YouTube-8M PCA eigenvalues (eigenvals.npy, shape (2048, 1))" % eigenvals_path)
  with tf.io.gfile.GFile(eigenvals_path, "rb") as f:
    eigenvals = np.load(f)
  if eigenvals.ndim != 2 or eigenvals.shape[1] != 1 or eigenvals.shape[0] < rgb_size:
    raise InputError("--eigenvals_path=%s has shape %s, expected (n, 1) with n >= %d"
                     % (eigenvals_path, eigenvals.shape, rgb_size))
  return eigenvals[:rgb_size, 0].astype(np.float32)


def preprocess(frames, input_preprocessing="l2", feature_sizes=(1024, 128), eigenvals_path="",
               **unused):
  """l2: each frame (all features concatenated) scaled to unit L2 norm (the starter's);
  whiten: NeXtVLAD's reverse whitening of the first feature, (x - 4/512)·(sqrt(eigenvals) + 1e-4),
  the others unchanged; none: as read."""
  if input_preprocessing == "l2":
    return tf.nn.l2_normalize(frames, axis=-1)
  if input_preprocessing == "whiten":
    rgb_size = int(feature_sizes[0])
    scale = np.sqrt(_load_eigenvals(eigenvals_path, rgb_size)) + 1e-4
    rgb = (frames[..., :rgb_size] - 4.0 / 512.0) * scale
    return tf.concat([rgb, frames[..., rgb_size:]], axis=-1)
  if input_preprocessing == "none":
    return frames
  raise InputError("--input_preprocessing=%r: expected one of %s"
                   % (input_preprocessing, ", ".join(PREPROCESSING)))


def nextvlad_layer(frames, mask, cluster_size, groups, expansion, is_training, scope):
  """frames [B, M, N], mask [B, M] (1 for real frames) -> [B, (λN/G)·K]."""
  feature_size = frames.shape.as_list()[-1]
  expanded_size = expansion * feature_size
  if expanded_size % groups:
    raise InputError("expansion*feature size %d is not divisible by --groups=%d" % (expanded_size, groups))
  group_size = expanded_size // groups
  batch, max_frames = tf.shape(frames)[0], tf.shape(frames)[1]
  with tf.variable_scope(scope):
    expanded = layers.dense(tf.reshape(frames, [-1, feature_size]), expanded_size, "expansion")
    attention = tf.sigmoid(layers.dense(expanded, groups, "group_attention"))
    attention = tf.reshape(attention, [batch, max_frames, groups]) * mask[:, :, None]
    attention = tf.reshape(attention, [batch, max_frames * groups, 1])
    assignment = layers.dense(expanded, groups * cluster_size, "cluster_assignment", use_bias=False,
                              initializer=tf.random_normal_initializer(stddev=1 / np.sqrt(expanded_size)))
    assignment = layers.batch_norm(assignment, is_training, "assignment_bn")
    assignment = tf.nn.softmax(tf.reshape(assignment, [batch, max_frames * groups, cluster_size]))
    assignment *= attention                                                   # [B, M·G, K]
    centres = tf.get_variable("cluster_centres", [1, group_size, cluster_size],
                              initializer=tf.random_normal_initializer(stddev=1 / np.sqrt(group_size)))
    chunks = tf.reshape(expanded, [batch, max_frames * groups, group_size])    # [B, M·G, λN/G]
    vlad = tf.transpose(tf.matmul(assignment, chunks, transpose_a=True), [0, 2, 1])  # [B, λN/G, K]
    vlad -= tf.reduce_sum(assignment, axis=1, keepdims=True) * centres
    vlad = tf.nn.l2_normalize(vlad, axis=1)
    vlad = tf.reshape(vlad, [batch, group_size * cluster_size])
    return layers.batch_norm(vlad, is_training, "vlad_bn")


def context_gating(activation, reduction, is_training, scope="gating"):
  """Squeeze-and-excitation gating: activation · sigmoid(W2 relu(BN(W1 activation)))."""
  size = activation.shape.as_list()[-1]
  with tf.variable_scope(scope):
    gates = layers.dense(activation, size // reduction, "squeeze", use_bias=False)
    gates = tf.nn.relu(layers.batch_norm(gates, is_training, "squeeze_bn"))
    gates = tf.sigmoid(layers.dense(gates, size, "excite", use_bias=False))
    return activation * gates


class NeXtVLADModel(models.BaseModel):
  """NeXtVLAD video classifier; hyperparameters default to the seed's configuration."""

  def __init__(self, feature_sizes=(1024, 128), groups=8, nextvlad_cluster_size=128,
               nextvlad_hidden_size=2048, expansion=2, gating_reduction=8, drop_rate=0.5,
               video_level_classifier_model="LogisticModel", l2_penalty=1e-5, moe_num_mixtures=2,
               input_preprocessing="l2", eigenvals_path="", **unused):
    super(NeXtVLADModel, self).__init__(
        feature_sizes=[int(s) for s in feature_sizes], groups=int(groups),
        cluster_size=int(nextvlad_cluster_size), hidden_size=int(nextvlad_hidden_size),
        expansion=int(expansion), gating_reduction=int(gating_reduction), drop_rate=float(drop_rate),
        classifier=video_level_classifier_model, l2_penalty=float(l2_penalty),
        moe_num_mixtures=int(moe_num_mixtures), input_preprocessing=input_preprocessing,
        eigenvals_path=eigenvals_path)

  def create_model(self, model_input, num_frames, vocab_size, is_training, **unused_params):
    hp = self.hparams
    frames = preprocess(model_input, hp["input_preprocessing"], hp["feature_sizes"], hp["eigenvals_path"])
    mask = tf.sequence_mask(num_frames, tf.shape(frames)[1], dtype=tf.float32)
    branches, offset = [], 0
    for index, size in enumerate(hp["feature_sizes"]):
      divisor = 1 if index == 0 else 2   # NeXtVLAD's audio branch: half the clusters and groups
      features = frames[:, :, offset:offset + size]
      features.set_shape([None, None, size])
      branches.append(nextvlad_layer(features, mask, hp["cluster_size"] // divisor,
                                     max(hp["groups"] // divisor, 1), hp["expansion"], is_training,
                                     "video_VLAD" if index == 0 else "audio_VLAD" if index == 1 else "feature%d_VLAD" % index))
      offset += size
    vlad = tf.concat(branches, axis=1)
    vlad = layers.dropout(vlad, hp["drop_rate"], is_training)
    hidden = layers.dense(vlad, hp["hidden_size"], "hidden", use_bias=False)
    hidden = layers.batch_norm(hidden, is_training, "hidden_bn")
    representation = context_gating(hidden, hp["gating_reduction"], is_training)
    classifier = models.get_model(hp["classifier"])
    if not isinstance(classifier, (video_level_models.LogisticModel, video_level_models.MoeModel)):
      raise InputError("--video_level_classifier_model=%r: expected LogisticModel or MoeModel"
                       % hp["classifier"])
    with tf.variable_scope("classifier"):
      output = classifier.create_model(representation, vocab_size, l2_penalty=hp["l2_penalty"],
                                       moe_num_mixtures=hp["moe_num_mixtures"])
    output["representation"] = representation
    return output
