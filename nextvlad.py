"""NeXtVLAD (Lin, Xiao, Fan, 2018): the aggregation layer, the video classifier built on it, and
linrongc's mixture of such classifiers (MixNeXtVladModel, the seed's final-submission model).

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
  batch, max_frames = tf.shape(frames)[0], tf.shape(frames)[1]
  with tf.variable_scope(scope):
    weighted, mass, centres = nextvlad_sums(frames, mask, batch, max_frames, cluster_size, groups,
                                            expansion, is_training, batch_norm, bn_mask_padding,
                                            centre_initializer)
    return nextvlad_finish(weighted, mass, centres, batch, is_training, batch_norm)


def nextvlad_sums(frames, mask, batch, max_frames, cluster_size, groups, expansion, is_training,
                  batch_norm=layers.batch_norm, bn_mask_padding=False, centre_initializer=None):
  """The layer's sums over frames, in the caller's (branch) variable scope: frames [B, M, N], mask
  [B, M], batch = B, max_frames = M -> (Σ_{frames, groups} a_gk x̃_g [B, λN/G, K], Σ a_gk [B, 1, K],
  the centres c [1, λN/G, K]). Both sums add one term per frame, so the sums of two sets of frames
  add up to those of their union (early exit's stages, early_exit.py), in inference mode, where every
  frame's terms depend on that frame alone."""
  feature_size = frames.shape.as_list()[-1]
  expanded_size = expansion * feature_size
  group_size = expanded_size // groups
  expanded = layers.dense(tf.reshape(frames, [-1, feature_size]), expanded_size,
                          scope="expansion")                                    # [B·M, λN]
  attention = tf.sigmoid(layers.dense(expanded, groups, scope="group_attention"))
  attention = tf.reshape(attention, [batch, max_frames, groups]) * mask[:, :, None]
  attention = tf.reshape(attention, [batch, max_frames * groups, 1])
  assignment = layers.dense(
      expanded, groups * cluster_size, use_bias=False, scope="cluster_assignment",
      initializer=centre_initializer and centre_initializer(expanded_size))
  assignment = batch_norm(assignment, is_training, scope="assignment_bn",
                          mask=tf.reshape(mask, [-1]) if bn_mask_padding else None)
  assignment = tf.nn.softmax(tf.reshape(assignment, [batch, max_frames * groups, cluster_size]))
  assignment *= attention                                                       # [B, M·G, K]
  centres = tf.get_variable("cluster_centres", [1, group_size, cluster_size],
                            initializer=centre_initializer and centre_initializer(group_size))
  chunks = tf.reshape(expanded, [batch, max_frames * groups, group_size])       # [B, M·G, λN/G]
  weighted = tf.matmul(chunks, assignment, transpose_a=True)                    # [B, λN/G, K]
  return weighted, tf.reduce_sum(assignment, axis=1, keepdims=True), centres


def nextvlad_finish(weighted, mass, centres, batch, is_training, batch_norm=layers.batch_norm):
  """The layer from its sums (nextvlad_sums), in the branch's scope: vlad_k = Σ a_gk x̃_g - (Σ a_gk)·c_k,
  L2 over λN/G per cluster, flattened, batch norm -> [B, (λN/G)·K]."""
  _, group_size, cluster_size = centres.shape.as_list()
  vlad = weighted - mass * centres
  vlad = tf.nn.l2_normalize(vlad, axis=1)
  vlad = tf.reshape(vlad, [batch, group_size * cluster_size])
  return batch_norm(vlad, is_training, scope="vlad_bn")


def context_gating(activation, reduction, is_training, scope="gating", batch_norm=layers.batch_norm,
                   unbiased_variance=False):
  """Squeeze-and-excitation gating: activation · sigmoid(W2 relu(BN(W1 activation))), no biases.
  `unbiased_variance`: the squeeze batch norm's moving variance follows n/(n-1)·var (the seed's
  gating_bn is slim's fused batch norm)."""
  size = activation.shape.as_list()[-1]
  with tf.variable_scope(scope):
    gates = layers.dense(activation, size // reduction, use_bias=False, scope="squeeze")
    gates = tf.nn.relu(batch_norm(gates, is_training, scope="squeeze_bn", unbiased=unbiased_variance))
    gates = tf.sigmoid(layers.dense(gates, size, use_bias=False, scope="excite"))
    return activation * gates


class NeXtVLADModel(models.BaseModel):
  """NeXtVLAD video classifier; hyperparameters default to the seed's configuration.

  Scopes (inside the caller's): video_VLAD/, audio_VLAD/ (each: expansion, group_attention,
  cluster_assignment, assignment_bn, cluster_centres, vlad_bn), hidden/, hidden_bn/, gating/
  (squeeze, squeeze_bn, excite), classifier/ (logistic/ or gates/ + experts/).
  """

  DEFAULT_PREPROCESSING = "whiten"  # the seed's and linrongc's

  def __init__(self, feature_sizes=(1024, 128), groups=8, nextvlad_cluster_size=128,
               nextvlad_hidden_size=2048, expansion=2, gating_reduction=8, drop_rate=0.5,
               video_level_classifier_model="LogisticModel", l2_penalty=1e-5, moe_num_mixtures=2,
               moe_prob_gating=False, input_preprocessing="whiten", eigenvals_path="", weight_init="slim",
               batchnorm_decay=0.999, bn_mask_padding=False, batchnorm_variance="seed",
               **unused_hparams):
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
    if batchnorm_variance not in layers.BATCHNORM_VARIANCE:
      raise InputError("--batchnorm_variance=%r: expected one of %s"
                       % (batchnorm_variance, ", ".join(layers.BATCHNORM_VARIANCE)))
    # The seed's fused slim batch norms (context gating, mixture weights) update their moving
    # variance with the unbiased batch variance; its other batch norms pass fused=False.
    self.fused_unbiased = batchnorm_variance == "seed"
    self.classifier = video_level_models.get_classifier(
        video_level_classifier_model, l2_penalty=l2_penalty, moe_num_mixtures=moe_num_mixtures,
        moe_prob_gating=moe_prob_gating, batchnorm_decay=batchnorm_decay)
    frame_level_models.check_preprocessing(input_preprocessing)
    self._check()

  def _batch_norm(self, inputs, is_training, scope, mask=None, unbiased=False):
    return layers.batch_norm(inputs, is_training, scope, decay=self.batchnorm_decay, mask=mask,
                             unbiased=unbiased)

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

  def _frames(self, model_input, num_frames):
    """Preprocessed frames [B, M, D] and their mask [B, M]; InputError if D is not the features'."""
    depth = model_input.shape.as_list()[-1]
    if depth is not None and depth != sum(self.feature_sizes):
      raise InputError("frames have %d features per frame but --feature_sizes=%s add up to %d"
                       % (depth, ",".join(map(str, self.feature_sizes)), sum(self.feature_sizes)))
    frames = frame_level_models.preprocess(model_input, self.input_preprocessing,
                                           self.feature_sizes, self.eigenvals_path)
    return frames, frame_level_models.frame_mask(num_frames, frames)

  def branch(self, frames, mask, vocab_size, is_training):
    """One NeXtVLAD classifier on preprocessed frames [B, M, D] with mask [B, M], in the caller's
    variable scope: per-feature NeXtVLAD, concat, dropout, hidden + BN, context gating, classifier.
    Returns the classifier's dict; its `representation` is the gated hidden vector [B, H]."""
    vlads, offset = [], 0
    for scope, size, clusters, groups in self._branches():
      features = frames[:, :, offset:offset + size]
      features.set_shape([None, None, size])
      vlads.append(nextvlad_layer(features, mask, clusters, groups, self.expansion,
                                  is_training, scope, self._batch_norm, self.bn_mask_padding,
                                  self.centre_initializer))
      offset += size
    return self.head(vlads, vocab_size, is_training)

  def branch_sums(self, frames, mask):
    """Inference mode, preprocessed frames [B, M, D], mask [B, M] -> per feature branch, the
    NeXtVLAD sums over these frames (nextvlad_sums: weighted [B, λN/G, K], mass [B, 1, K], centres),
    which add up over sets of frames; head(self.vlads(sums)) is then the model's output."""
    sums, offset = [], 0
    batch, max_frames = tf.shape(frames)[0], tf.shape(frames)[1]
    for scope, size, clusters, groups in self._branches():
      features = frames[:, :, offset:offset + size]
      features.set_shape([None, None, size])
      with tf.variable_scope(scope):
        sums.append(nextvlad_sums(features, mask, batch, max_frames, clusters, groups, self.expansion,
                                  False, self._batch_norm, self.bn_mask_padding, self.centre_initializer))
      offset += size
    return sums

  def vlads(self, sums):
    """The branches' NeXtVLAD vectors (nextvlad_finish, inference mode) from branch_sums' sums."""
    vlads = []
    for (scope, _, _, _), (weighted, mass, centres) in zip(self._branches(), sums):
      with tf.variable_scope(scope):
        vlads.append(nextvlad_finish(weighted, mass, centres, tf.shape(weighted)[0], False,
                                     self._batch_norm))
    return vlads

  def head(self, vlads, vocab_size, is_training):
    """The branches' NeXtVLAD vectors -> concat, dropout, hidden + BN, context gating, classifier; the
    classifier's dict with `representation`, the gated hidden vector [B, H]."""
    vlad = layers.dropout(tf.concat(vlads, axis=1), self.drop_rate, is_training)
    hidden = layers.dense(vlad, self.hidden_size, use_bias=False, scope="hidden")
    hidden = self._batch_norm(hidden, is_training, scope="hidden_bn")
    representation = context_gating(hidden, self.gating_reduction, is_training,
                                    batch_norm=self._batch_norm, unbiased_variance=self.fused_unbiased)
    with tf.variable_scope("classifier"):
      output = self.classifier.create_model(representation, vocab_size, is_training=is_training)
    output["representation"] = representation
    return output

  def create_model(self, model_input, num_frames, vocab_size, is_training, **unused_params):
    """model_input [B, M, sum(feature_sizes)], num_frames [B] -> dict with `logits`,
    `predictions` and `representation` (the gated hidden vector [B, H])."""
    frames, mask = self._frames(model_input, num_frames)
    return self.branch(frames, mask, vocab_size, is_training)

  def macs(self, frames, vocab_size):
    """Multiply-adds per video of `frames` frames: frames · frame_macs() + head_macs(vocab_size)."""
    return frames * self.frame_macs() + self.head_macs(vocab_size)

  def frame_macs(self):
    """Multiply-adds of one frame, summed over the branches (N features, K clusters, G groups):
    expansion N·λN, attention λN·G, assignment λN·G·K, aggregation G·(λN/G)·K = λN·K."""
    return sum(size * self.expansion * (size + groups + groups * clusters + clusters)
               for _, size, clusters, groups in self._branches())

  def head_macs(self, vocab_size):
    """Multiply-adds after the aggregation: the hidden layer (Σ (λN/G)·K)·H, the gating 2·H·H/r and
    the classifier."""
    vlad_size = sum(size * self.expansion // groups * clusters
                    for _, size, clusters, groups in self._branches())
    return (vlad_size * self.hidden_size
            + 2 * self.hidden_size * (self.hidden_size // self.gating_reduction)
            + self.classifier.macs(self.hidden_size, vocab_size))


class MixNeXtVladModel(NeXtVLADModel):
  """linrongc's mixture of `mix_number` NeXtVLAD classifiers with on-the-fly distillation (the seed's
  final-submission model); every other hyperparameter is NeXtVLADModel's, shared by the branches.

  Mixture weights w = softmax(dense(BN(mean frame))) [B, mix_number] (the mean over all M input rows of
  the preprocessed frames, padding included, as linrongc computes it); branch n is a full
  NeXtVLADModel classifier with logits z_n; the mixture's logits are z = Σ_n w_n z_n and its
  predictions sigmoid(z). Its `representation` (for L_rep) is Σ_n w_n h_n, the mixture-weighted sum of
  the branches' gated hidden vectors [B, H].

  In training, `aux_predictions` lists each branch's sigmoid(z_n) (the trainer adds their label
  losses, as the seed does) and the collaborative-learning term
      cl_lambda · mean_batch Σ_n KL(softmax(z / T) || softmax(z_n / T)),  T = cl_temperature,
  (softmax and KL over classes, 1e-8 inside the logs) goes to REGULARIZATION_LOSSES, so that
  --regularization_penalty scales it like the seed's `regularization_loss`; it is also returned as
  `regularization_loss`.

  Scopes (inside the caller's): mix_weights_bn/, mix_weights/, branch_<n>/ (each NeXtVLADModel's).
  """

  def __init__(self, mix_number=3, cl_temperature=2.0, cl_lambda=1.0, **hparams):
    self.mix_number = int(mix_number)
    self.cl_temperature = float(cl_temperature)
    self.cl_lambda = float(cl_lambda)
    if self.mix_number < 1 or self.cl_temperature <= 0:
      raise InputError("--mix_number=%s, --cl_temperature=%s: expected at least one branch and a "
                       "positive temperature" % (mix_number, cl_temperature))
    super(MixNeXtVladModel, self).__init__(**hparams)

  def create_model(self, model_input, num_frames, vocab_size, is_training, **unused_params):
    frames, mask = self._frames(model_input, num_frames)
    mean_frame = self._batch_norm(tf.reduce_mean(frames, axis=1), is_training, scope="mix_weights_bn",
                                  unbiased=self.fused_unbiased)
    weights = tf.nn.softmax(layers.dense(mean_frame, self.mix_number, scope="mix_weights"))
    branches = []
    for n in range(self.mix_number):
      with tf.variable_scope("branch_%d" % n):
        branches.append(self.branch(frames, mask, vocab_size, is_training))
    branch_logits = tf.stack([b["logits"] for b in branches], axis=1)            # [B, n, C]
    logits = tf.reduce_sum(weights[:, :, None] * branch_logits, axis=1)
    representation = tf.reduce_sum(
        weights[:, :, None] * tf.stack([b["representation"] for b in branches], axis=1), axis=1)
    output = {"logits": logits, "predictions": tf.sigmoid(logits), "representation": representation}
    if is_training:
      output["aux_predictions"] = [b["predictions"] for b in branches]
      output["regularization_loss"] = self.cl_lambda * tf.reduce_mean(tf.reduce_sum(
          collaborative_kl(logits, branch_logits, self.cl_temperature), axis=1))
      tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, output["regularization_loss"])
    return output

  def macs(self, frames, vocab_size):
    """The branches' multiply-adds and the mixture weights' dense layer on the mean frame."""
    return (self.mix_number * super(MixNeXtVladModel, self).macs(frames, vocab_size)
            + sum(self.feature_sizes) * self.mix_number)


def collaborative_kl(logits, branch_logits, temperature, epsilon=1e-8):
  """KL(softmax(logits / T) || softmax(branch_logits / T)) over classes: [B, C], [B, n, C] -> [B, n]."""
  target = tf.nn.softmax(logits / temperature)[:, None, :]
  branch = tf.nn.softmax(branch_logits / temperature)
  return tf.reduce_sum(target * (tf.log(target + epsilon) - tf.log(branch + epsilon)), axis=2)
