"""The few layers the models need, on tf.get_variable: dense, batch norm (moving averages updated
through UPDATE_OPS in training, used at inference) and dropout."""

import tensorflow.compat.v1 as tf


def dense(inputs, units, scope, use_bias=True, l2_penalty=None, initializer=None):
  """inputs [..., n] @ weights [n, units] (+ biases). With l2_penalty, adds
  l2_penalty * (l2(weights) + l2(biases)) (tf.nn.l2_loss: sum of squares / 2) to
  REGULARIZATION_LOSSES."""
  in_units = inputs.shape.as_list()[-1]
  with tf.variable_scope(scope):
    weights = tf.get_variable("weights", [in_units, units],
                              initializer=initializer or tf.glorot_uniform_initializer())
    outputs = tf.tensordot(inputs, weights, axes=1) if inputs.shape.ndims > 2 else tf.matmul(inputs, weights)
    penalty = tf.nn.l2_loss(weights)
    if use_bias:
      biases = tf.get_variable("biases", [units], initializer=tf.zeros_initializer())
      outputs += biases
      penalty += tf.nn.l2_loss(biases)
    if l2_penalty:
      tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, l2_penalty * penalty)
  return outputs


def batch_norm(inputs, is_training, scope, decay=0.99, epsilon=1e-3, center=True, scale=True):
  """Normalises over every axis but the last. Training: batch statistics, and ops that move
  `moving_mean`/`moving_variance` towards them are added to UPDATE_OPS. Inference: the moving
  statistics, so a video's output never depends on the rest of its batch."""
  channels = inputs.shape.as_list()[-1]
  with tf.variable_scope(scope):
    beta = tf.get_variable("beta", [channels], initializer=tf.zeros_initializer()) if center else None
    gamma = tf.get_variable("gamma", [channels], initializer=tf.ones_initializer()) if scale else None
    moving_mean = tf.get_variable("moving_mean", [channels], initializer=tf.zeros_initializer(),
                                  trainable=False)
    moving_variance = tf.get_variable("moving_variance", [channels], initializer=tf.ones_initializer(),
                                      trainable=False)
    if is_training:
      axes = list(range(inputs.shape.ndims - 1))
      mean, variance = tf.nn.moments(inputs, axes)
      for moving, value in ((moving_mean, mean), (moving_variance, variance)):
        update = tf.assign_sub(moving, (1.0 - decay) * (moving - value))
        tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update)
    else:
      mean, variance = moving_mean, moving_variance
    return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, epsilon)


def dropout(inputs, drop_rate, is_training):
  """Inverted dropout in training (drop_rate of the units zeroed, the rest scaled up); identity
  otherwise."""
  if not is_training or not drop_rate:
    return inputs
  return tf.nn.dropout(inputs, rate=drop_rate)
