"""NeXtVLAD (Lin, Xiao, Fan, 2018): the aggregation layer and the video classifier built on it.

Layer, for frames x [B, M, N] with expansion λ, groups G, clusters K:
  ẋ = dense(x) [λN]; group attention α = sigmoid(dense(ẋ)) [G] · frame mask;
  assignment a = softmax_K(BN(ẋ W)) [G, K] · α; each ẋ split into G chunks x̃_g of λN/G;
  vlad_k = Σ_{frames, groups} a_gk (x̃_g - c_k); L2 over λN/G per cluster; flatten; BN.
Model: rgb branch NeXtVLAD(K, G), audio branch NeXtVLAD(K/2, G/2), concat, dropout, dense to H
(no bias) + BN, SE context gating -> the representation, then the video-level classifier.

The frame mask comes from `num_frames` for any number of input frames M, so a student's k frames
and a teacher's 300 share the code. Padded frames get attention 0; as in the seed, the assignment
batch norm still counts their rows in its training-batch statistics (so a video's padding can shift
its batch's statistics) unless --bn_mask_padding leaves them out.
"""

import numpy as np
import tensorflow.compat.v1 as tf

import frame_level_models
import layers
import models
import video_level_models
from utils import InputError

BRANCH_SCOPES = ("video_VLAD", "audio_VLAD")


def nextvlad_layer(frames, mask, cluster_size, groups, expansion, is_training, scope,
                   batch_norm=layers.batch_norm, bn_mask_padding=False, centre_initializer=None):
  """frames [B, M, N], mask [B, M] (1 for real frames) -> [B, (λN/G)·K].

  `centre_initializer` (None: the scope's) initialises the cluster assignment weights and centres;
  `bn_mask_padding` leaves padded rows out of the assignment batch norm's statistics."""
  feature_size = frames.shape.as_list()[-1]
  expanded_size = expansion * feature_size
  group_size = expanded_size // groups
  batch, max_frames = tf.shape(frames)[0], tf.shape(frames)[1]
  with tf.variable_scope(scope):
    expanded = layers.dense(tf.reshape(frames, [-1, feature_size]), expanded_size,
                            scope="expansion")                                  # [B·M, λN]
    attention = tf.sigmoid(layers.dense(expanded, groups, scope="group_attention"))
    attention = tf.reshape(attention, [batch, max_frames, groups]) * mask[:, :, None]
    attention = tf.reshape(attention, [batch, max_frames * groups, 1])
    assignment = layers.dense(
        expanded, groups * cluster_size, use_bias=False, scope="cluster_assignment",
        initializer=centre_initializer and centre_initializer(expanded_size))
    assignment = batch_norm(assignment, is_training, scope="assignment_bn",
                            mask=tf.reshape(mask, [-1]) if bn_mask_padding else None)
    assignment = tf.nn.softmax(tf.reshape(assignment, [batch, max_frames * groups, cluster_size]))
    assignment *= attention                                                     # [B, M·G, K]
    centres = tf.get_variable("cluster_centres", [1, group_size, cluster_size],
                              initializer=centre_initializer and centre_initializer(group_size))
    chunks = tf.reshape(expanded, [batch, max_frames * groups, group_size])     # [B, M·G, λN/G]
    vlad = tf.matmul(chunks, assignment, transpose_a=True)                      # [B, λN/G, K]
    vlad -= tf.reduce_sum(assignment, axis=1, keepdims=True) * centres
    vlad = tf.nn.l2_normalize(vlad, axis=1)
    vlad = tf.reshape(vlad, [batch, group_size * cluster_size])
    return batch_norm(vlad, is_training, scope="vlad_bn")


def context_gating(activation, reduction, is_training, scope="gating", batch_norm=layers.batch_norm):
  """Squeeze-and-excitation gating: activation · sigmoid(W2 relu(BN(W1 activation))), no biases."""
  size = activation.shape.as_list()[-1]
  with tf.variable_scope(scope):
    gates = layers.dense(activation, size // reduction, use_bias=False, scope="squeeze")
    gates = tf.nn.relu(batch_norm(gates, is_training, scope="squeeze_bn"))
    gates = tf.sigmoid(layers.dense(gates, size, use_bias=False, scope="excite"))
    return activation * gates


class NeXtVLADModel(models.BaseModel):
  """NeXtVLAD video classifier; hyperparameters default to the seed's configuration.

  Scopes (inside the caller's): video_VLAD/, audio_VLAD/ (each: expansion, group_attention,
  cluster_assignment, assignment_bn, cluster_centres, vlad_bn), hidden/, hidden_bn/, gating/
  (squeeze, squeeze_bn, excite), classifier/ (logistic/ or gates/ + experts/).
  """

  def __init__(self, feature_sizes=(1024, 128), groups=8, nextvlad_cluster_size=128,
               nextvlad_hidden_size=2048, expansion=2, gating_reduction=8, drop_rate=0.5,
               video_level_classifier_model="LogisticModel", l2_penalty=1e-5, moe_num_mixtures=2,
               input_preprocessing="whiten", eigenvals_path="", weight_init="slim",
               batchnorm_decay=0.999, bn_mask_padding=False, **unused_hparams):
    self.feature_sizes = [int(size) for size in feature_sizes]
    self.groups = int(groups)
    self.cluster_size = int(nextvlad_cluster_size)
    self.hidden_size = int(nextvlad_hidden_size)
    self.expansion = int(expansion)
    self.gating_reduction = int(gating_reduction)
    self.drop_rate = float(drop_rate)
    self.input_preprocessing = input_preprocessing
    self.eigenvals_path = eigenvals_path
    self.bn_mask_padding = bool(bn_mask_padding)
    # The seed draws every weight from the scope's slim initialiser; our earlier Glorot setting drew
    # the cluster weights and centres from N(0, 1/fan_in) instead.
    layers.weight_initializer(weight_init)
    self.centre_initializer = (None if weight_init == "slim" else
                               lambda fan_in: tf.random_normal_initializer(stddev=1 / np.sqrt(fan_in)))
    self.batchnorm_decay = float(batchnorm_decay)
    self.classifier = video_level_models.get_classifier(
        video_level_classifier_model, l2_penalty=l2_penalty, moe_num_mixtures=moe_num_mixtures)
    frame_level_models.check_preprocessing(input_preprocessing)
    self._check()

  def _batch_norm(self, inputs, is_training, scope, mask=None):
    return layers.batch_norm(inputs, is_training, scope, decay=self.batchnorm_decay, mask=mask)

  def _branches(self):
    """(scope, feature size, clusters, groups) per feature: the audio branch has half of each."""
    return [(scope, size, self.cluster_size // divisor, self.groups // divisor)
            for scope, size, divisor in zip(BRANCH_SCOPES, self.feature_sizes, (1, 2))]

  def _check(self):
    if len(self.feature_sizes) not in (1, 2):
      raise InputError("--feature_sizes=%s: NeXtVLADModel takes one or two features (rgb, audio)"
                       % ",".join(map(str, self.feature_sizes)))
    for scope, size, clusters, groups in self._branches():
      if clusters < 1 or groups < 1 or (self.expansion * size) % groups:
        raise InputError(
            "%s: --nextvlad_cluster_size=%d and --groups=%d give %d clusters and %d groups for a "
            "feature of size %d with --expansion=%d; expected at least 1 of each and groups "
            "dividing expansion * size" % (scope, self.cluster_size, self.groups, clusters, groups,
                                           size, self.expansion))
    if self.hidden_size < 1 or not 1 <= self.gating_reduction <= self.hidden_size:
      raise InputError("--nextvlad_hidden_size=%d, --gating_reduction=%d: expected "
                       "1 <= gating_reduction <= hidden size" % (self.hidden_size, self.gating_reduction))

  def create_model(self, model_input, num_frames, vocab_size, is_training, **unused_params):
    """model_input [B, M, sum(feature_sizes)], num_frames [B] -> dict with `logits`,
    `predictions` and `representation` (the gated hidden vector [B, H])."""
    depth = model_input.shape.as_list()[-1]
    if depth is not None and depth != sum(self.feature_sizes):
      raise InputError("frames have %d features per frame but --feature_sizes=%s add up to %d"
                       % (depth, ",".join(map(str, self.feature_sizes)), sum(self.feature_sizes)))
    frames = frame_level_models.preprocess(model_input, self.input_preprocessing,
                                           self.feature_sizes, self.eigenvals_path)
    mask = frame_level_models.frame_mask(num_frames, frames)
    branches, offset = [], 0
    for scope, size, clusters, groups in self._branches():
      features = frames[:, :, offset:offset + size]
      features.set_shape([None, None, size])
      branches.append(nextvlad_layer(features, mask, clusters, groups, self.expansion,
                                     is_training, scope, self._batch_norm, self.bn_mask_padding,
                                     self.centre_initializer))
      offset += size
    vlad = layers.dropout(tf.concat(branches, axis=1), self.drop_rate, is_training)
    hidden = layers.dense(vlad, self.hidden_size, use_bias=False, scope="hidden")
    hidden = self._batch_norm(hidden, is_training, scope="hidden_bn")
    representation = context_gating(hidden, self.gating_reduction, is_training,
                                    batch_norm=self._batch_norm)
    with tf.variable_scope("classifier"):
      output = self.classifier.create_model(representation, vocab_size, is_training=is_training)
    output["representation"] = representation
    return output
