"""The few layers the models need, on tf.get_variable: dense, batch norm (moving averages updated
through UPDATE_OPS in training, used at inference) and dropout."""

import tensorflow.compat.v1 as tf


def add_l2_penalty(penalty, variables):
  """Adds penalty * Σ l2(v) (tf.nn.l2_loss: sum of squares / 2) to REGULARIZATION_LOSSES, which the
  trainer sums into the loss."""
  tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES,
                       penalty * tf.add_n([tf.nn.l2_loss(v) for v in variables]))


def dense(inputs, units, use_bias=True, scope="dense", initializer=None, regularize=0.0):
  """inputs [batch, n] @ `weights` [n, units] (+ `biases` [units]). A non-zero `regularize` is the
  L2 penalty of the layer's weights and biases (see add_l2_penalty)."""
  in_units = inputs.shape.as_list()[-1]
  with tf.variable_scope(scope):
    weights = tf.get_variable("weights", [in_units, units],
                              initializer=initializer or tf.glorot_uniform_initializer())
    outputs = tf.matmul(inputs, weights)
    variables = [weights]
    if use_bias:
      biases = tf.get_variable("biases", [units], initializer=tf.zeros_initializer())
      outputs = tf.nn.bias_add(outputs, biases)
      variables.append(biases)
    if regularize:
      add_l2_penalty(regularize, variables)
  return outputs


def batch_norm(inputs, is_training, scope="batch_norm", decay=0.99, epsilon=1e-3, center=True,
               scale=True, mask=None):
  """Normalises each channel (last axis) over every other axis.

  Training: batch statistics, and ops moving `moving_mean`/`moving_variance` towards them
  (moving -= (1 - decay) * (moving - batch value)) are added to UPDATE_OPS. Inference: the moving
  statistics, so a video's output never depends on the rest of its batch. `mask` (inputs' shape
  without the last axis, 1 for real entries) leaves padded rows out of the batch statistics.
  `is_training` must be a Python bool: the two modes build different graphs.
  """
  if not isinstance(is_training, bool):
    raise TypeError("batch_norm: is_training must be a Python bool, got %r" % (is_training,))
  channels = inputs.shape.as_list()[-1]
  with tf.variable_scope(scope):
    beta = tf.get_variable("beta", [channels], initializer=tf.zeros_initializer()) if center else None
    gamma = tf.get_variable("gamma", [channels], initializer=tf.ones_initializer()) if scale else None
    moving_mean = tf.get_variable("moving_mean", [channels], initializer=tf.zeros_initializer(),
                                  trainable=False)
    moving_variance = tf.get_variable("moving_variance", [channels],
                                      initializer=tf.ones_initializer(), trainable=False)
    if is_training:
      axes = list(range(inputs.shape.ndims - 1))
      if mask is None:
        mean, variance = tf.nn.moments(inputs, axes)
      else:
        mean, variance = tf.nn.weighted_moments(inputs, axes, tf.expand_dims(mask, -1))
      for moving, value in ((moving_mean, mean), (moving_variance, variance)):
        tf.add_to_collection(tf.GraphKeys.UPDATE_OPS,
                             tf.assign_sub(moving, (1.0 - decay) * (moving - value)))
    else:
      mean, variance = moving_mean, moving_variance
    return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, epsilon)


def dropout(inputs, drop_rate, is_training):
  """Inverted dropout in training (a `drop_rate` fraction of the units zeroed, the rest scaled by
  1 / (1 - drop_rate)); identity otherwise."""
  if not is_training or not drop_rate:
    return inputs
  return tf.nn.dropout(inputs, rate=drop_rate)
