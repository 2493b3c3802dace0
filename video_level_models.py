"""Video-level classifiers: used on video-level features [B, D] directly, and as the classifier on
top of a frame model's vector. create_model(model_input, vocab_size, ...) -> dict with `logits`,
`predictions` and `representation` (= model_input, the classifier's input)."""

import tensorflow.compat.v1 as tf

import layers
import models
import utils
from utils import InputError


class LogisticModel(models.BaseModel):
  """One sigmoid per class on the input vector (scope `logistic`); L2 `l2_penalty` on its weights
  and biases."""

  def __init__(self, l2_penalty=1e-8, **unused_hparams):
    self.l2_penalty = float(l2_penalty)

  def create_model(self, model_input, vocab_size, l2_penalty=None, is_training=False,
                   **unused_params):
    """`l2_penalty`, when given, overrides the constructor's."""
    penalty = self.l2_penalty if l2_penalty is None else float(l2_penalty)
    logits = layers.dense(model_input, vocab_size, scope="logistic", regularize=penalty)
    return {"logits": logits, "predictions": tf.sigmoid(logits), "representation": model_input}

  def macs(self, input_size, vocab_size):
    """Multiply-adds per video on an input vector of `input_size` values."""
    return input_size * vocab_size


class MoeModel(models.BaseModel):
  """The starter's mixture of experts: per class, a softmax gate (scope `gates`, no bias) over
  `moe_num_mixtures` sigmoid experts (scope `experts`) plus a dummy expert that always says 0;
  L2 `l2_penalty` on every weight and bias.

  logits are the exact log(p / (1 - p)) of the mixture p, computed in log space: with log-gates
  g_m and expert logits e_m, log p = LSE_m(g_m + log σ(e_m)) and, since the gates sum to 1,
  log(1 - p) = LSE(g_dummy, g_m + log σ(-e_m)). The distillation losses can then use them at any
  confidence.

  moe_prob_gating (WILLOW's probability gating, off by default as in the starter): the mixture's
  probabilities p [B, C] are gated by their own context,
      p' = p ⊙ σ(BN(p · W)),  W [C, C] ~ N(0, 1/C) (scope `gating_prob`, no bias; BN with centre and
  scale), so classes that co-occur can raise or lower each other. Then log p' = log p + log σ(z) and
  log(1 - p') = log(-expm1(log p')), still exact at any confidence.
  """

  def __init__(self, l2_penalty=1e-8, moe_num_mixtures=2, moe_prob_gating=False, batchnorm_decay=0.999,
               **unused_hparams):
    self.l2_penalty = float(l2_penalty)
    self.num_mixtures = int(moe_num_mixtures)
    self.prob_gating, self.batchnorm_decay = bool(moe_prob_gating), float(batchnorm_decay)
    if self.num_mixtures < 1:
      raise InputError("--moe_num_mixtures=%s: expected a positive integer" % moe_num_mixtures)

  def create_model(self, model_input, vocab_size, l2_penalty=None, moe_num_mixtures=None,
                   is_training=False, **unused_params):
    """`l2_penalty` and `moe_num_mixtures`, when given, override the constructor's."""
    penalty = self.l2_penalty if l2_penalty is None else float(l2_penalty)
    mixtures = self.num_mixtures if moe_num_mixtures is None else int(moe_num_mixtures)
    gates = layers.dense(model_input, vocab_size * (mixtures + 1), use_bias=False, scope="gates",
                         regularize=penalty)
    experts = layers.dense(model_input, vocab_size * mixtures, scope="experts", regularize=penalty)
    log_gates = tf.nn.log_softmax(tf.reshape(gates, [-1, vocab_size, mixtures + 1]))
    experts = tf.reshape(experts, [-1, vocab_size, mixtures])
    experts_on, dummy = log_gates[:, :, :mixtures], log_gates[:, :, mixtures:]
    log_positive = tf.reduce_logsumexp(experts_on - tf.nn.softplus(-experts), axis=2)
    log_negative = tf.reduce_logsumexp(
        tf.concat([dummy, experts_on - tf.nn.softplus(experts)], axis=2), axis=2)
    predictions = tf.reduce_sum(tf.exp(experts_on) * tf.sigmoid(experts), axis=2)          # [B, C]
    if self.prob_gating:
      with tf.variable_scope("gating_prob"):
        weights = tf.get_variable("weights", [vocab_size, vocab_size],
                                  initializer=tf.random_normal_initializer(stddev=vocab_size ** -0.5))
        gate = layers.batch_norm(tf.matmul(predictions, weights), is_training,             # [B, C]
                                 decay=self.batchnorm_decay)
      log_positive += tf.log_sigmoid(gate)
      log_negative = tf.log(-tf.math.expm1(tf.minimum(log_positive, -1e-12)))
      predictions *= tf.sigmoid(gate)
    return {"logits": log_positive - log_negative, "predictions": predictions,
            "representation": model_input}

  def macs(self, input_size, vocab_size):
    """Multiply-adds per video on an input vector of `input_size` values: gates and experts (and the
    probability gating's C x C matmul)."""
    return input_size * vocab_size * (2 * self.num_mixtures + 1) + self.prob_gating * vocab_size ** 2


CLASSIFIERS = {cls.__name__: cls for cls in (LogisticModel, MoeModel)}


def get_classifier(name, **hparams):
  """The video-level classifier a frame model puts on top of its vector, by flag name."""
  return utils.lookup(CLASSIFIERS, name, "video_level_classifier_model")(**hparams)
