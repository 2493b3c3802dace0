"""Video-level classifiers: on averaged features directly, or on top of a frame model's vector."""

import tensorflow.compat.v1 as tf

import layers
import models

EPSILON = 1e-6


class LogisticModel(models.BaseModel):
  """One sigmoid per class on the input vector; L2 penalty on weights and biases."""

  def create_model(self, model_input, vocab_size, l2_penalty=1e-8, is_training=False, **unused_params):
    logits = layers.dense(model_input, vocab_size, "logistic", l2_penalty=l2_penalty)
    return {"logits": logits, "predictions": tf.sigmoid(logits), "representation": model_input}


class MoeModel(models.BaseModel):
  """The starter's mixture of experts: per class, a softmax gate over `moe_num_mixtures` sigmoid
  experts plus a dummy expert that always says 0."""

  def create_model(self, model_input, vocab_size, l2_penalty=1e-8, moe_num_mixtures=2,
                   is_training=False, **unused_params):
    mixtures = int(moe_num_mixtures)
    gates = layers.dense(model_input, vocab_size * (mixtures + 1), "gates", l2_penalty=l2_penalty)
    experts = layers.dense(model_input, vocab_size * mixtures, "experts", l2_penalty=l2_penalty)
    gate_distribution = tf.nn.softmax(tf.reshape(gates, [-1, mixtures + 1]))
    expert_distribution = tf.sigmoid(tf.reshape(experts, [-1, mixtures]))
    probabilities = tf.reduce_sum(gate_distribution[:, :mixtures] * expert_distribution, axis=1)
    predictions = tf.reshape(probabilities, [-1, vocab_size])
    clipped = tf.clip_by_value(predictions, EPSILON, 1.0 - EPSILON)
    logits = tf.log(clipped) - tf.log1p(-clipped)  # the logit whose sigmoid is the mixture
    return {"logits": logits, "predictions": predictions, "representation": model_input}
