"""The few layers the models need, on tf.get_variable: dense, batch norm (moving averages updated
through UPDATE_OPS in training, used at inference) and dropout, and the weight initialisers."""

import collections
import math

import tensorflow.compat.v1 as tf

from utils import InputError

WEIGHT_INITS = ("slim", "glorot")
# --batchnorm_variance: what a layer's moving variance moves towards (see batch_norm's `unbiased`).
BATCHNORM_VARIANCE = ("seed", "biased")
# One training-mode batch norm: its moving variables and this batch's mean and (biased) variance.
BatchNormStatistics = collections.namedtuple("BatchNormStatistics",
                                             "moving_mean moving_variance mean variance")
# Each field of every training-mode batch norm goes to its own graph collection (of variables or
# tensors, which a checkpoint's meta graph can store; precise_bn.py reads them back).
_STATISTICS_COLLECTIONS = tuple("batch_norm_statistics/" + field for field in BatchNormStatistics._fields)


def batch_norm_statistics(graph=None):
  """[BatchNormStatistics] of every training-mode batch norm built in `graph` (the default graph)."""
  graph = graph or tf.get_default_graph()
  return [BatchNormStatistics(*fields)
          for fields in zip(*(graph.get_collection(key) for key in _STATISTICS_COLLECTIONS))]


class SlimVarianceScaling(object):
  """slim's variance_scaling_initializer() as the seed and NeXtVLAD use it: factor 2, fan-in,
  truncated normal with stddev sqrt(1.3 * 2 / fan_in) (1.3 corrects for the truncation at 2 stddev,
  so the values' std is about sqrt(2 / fan_in)). fan_in is shape[-2] times every leading dimension
  (shape[-1] for a vector)."""

  def __call__(self, shape, dtype=tf.float32, partition_info=None):
    shape = [int(d) for d in shape]
    fan_in = float(shape[-1]) if len(shape) < 2 else float(shape[-2]) * math.prod(shape[:-2])
    return tf.random.truncated_normal(shape, 0.0, math.sqrt(1.3 * 2.0 / fan_in), dtype=dtype)


def weight_initializer(weight_init):
  """Default initialiser of a model's weights (--weight_init): slim (the seed's) or glorot (the
  default of tf.get_variable: Glorot uniform)."""
  if weight_init not in WEIGHT_INITS:
    raise InputError("--weight_init=%r: expected one of %s" % (weight_init, ", ".join(WEIGHT_INITS)))
  return SlimVarianceScaling() if weight_init == "slim" else tf.glorot_uniform_initializer()


def add_l2_penalty(penalty, variables):
  """Adds penalty * Σ l2(v) (tf.nn.l2_loss: sum of squares / 2) to REGULARIZATION_LOSSES, which the
  trainer sums into the loss."""
  tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES,
                       penalty * tf.add_n([tf.nn.l2_loss(v) for v in variables]))


def dense(inputs, units, use_bias=True, scope="dense", initializer=None, regularize=0.0):
  """inputs [batch, n] @ `weights` [n, units] (+ `biases` [units], zeros). `weights` take `initializer`,
  or else the enclosing variable scope's (model_utils.build_model sets --weight_init's). A non-zero
  `regularize` is the L2 penalty of the layer's weights and biases (see add_l2_penalty)."""
  in_units = inputs.shape.as_list()[-1]
  with tf.variable_scope(scope):
    weights = tf.get_variable("weights", [in_units, units],
                              initializer=initializer)
    outputs = tf.matmul(inputs, weights)
    variables = [weights]
    if use_bias:
      biases = tf.get_variable("biases", [units], initializer=tf.zeros_initializer())
      outputs = tf.nn.bias_add(outputs, biases)
      variables.append(biases)
    if regularize:
      add_l2_penalty(regularize, variables)
  return outputs


def batch_norm(inputs, is_training, scope="batch_norm", decay=0.999, epsilon=1e-3, center=True,
               scale=True, mask=None, unbiased=False):
  """Normalises each channel (last axis) over every other axis; decay and epsilon default to slim's.

  Training: batch statistics, and ops moving `moving_mean`/`moving_variance` towards them
  (moving -= (1 - decay) * (moving - batch value)) are added to UPDATE_OPS. Inference: the moving
  statistics, so a video's output never depends on the rest of its batch. `mask` (inputs' shape
  without the last axis, 1 for real entries) leaves padded rows out of the batch statistics.
  `unbiased` moves the moving variance towards the Bessel-corrected batch variance n/(n-1)·var
  (n rows, the factor 1 when n = 1), as slim's fused batch norm (TensorFlow's FusedBatchNorm) does;
  the batch itself is normalised with the biased variance either way.
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
      target_variance = variance
      if unbiased:
        if mask is None:
          rows = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        else:
          rows = tf.reduce_sum(tf.cast(mask, tf.float32))
        target_variance = variance * rows / tf.maximum(rows - 1.0, 1.0)
      for key, value in zip(_STATISTICS_COLLECTIONS, (moving_mean, moving_variance, mean, variance)):
        tf.add_to_collection(key, value)
      for moving, value in ((moving_mean, mean), (moving_variance, target_variance)):
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


def lstm(inputs, mask, cells, num_layers, scope="lstm", emit="state", forget_bias=1.0):
  """A stack of `num_layers` LSTM layers of `cells` units over inputs [B, T, D] (T may be dynamic),
  stepping only where mask [B, T] is 1: at a masked step every layer keeps its state, so a sequence
  whose mask is all 0 ends in the zero state.

  Layer l at step t, with input x (the frame for l = 0, layer l-1's new h otherwise), one fused matmul:
    [i, j, f, o] = [x, h] · W_l + b_l          W_l [D_l + cells, 4·cells] (`weights`), b_l (`biases`, zeros)
    c' = c·σ(f + forget_bias) + σ(i)·tanh(j),   h' = tanh(c')·σ(o)
  (the gate order and the forget bias of TensorFlow 1's BasicLSTMCell). Returns the final
  [c_1, h_1, ..., c_L, h_L] [B, 2·L·cells] for emit="state", the top layer's h [B, cells] for emit="h".
  Variables: scope/layer_<l>/{weights, biases}."""
  batch, steps = tf.shape(inputs)[0], tf.shape(inputs)[1]
  weights = []
  in_units = inputs.shape.as_list()[-1]
  with tf.variable_scope(scope):
    for layer in range(num_layers):
      with tf.variable_scope("layer_%d" % layer):
        weights.append((tf.get_variable("weights", [in_units + cells, 4 * cells]),
                        tf.get_variable("biases", [4 * cells], initializer=tf.zeros_initializer())))
      in_units = cells
  frames = tf.TensorArray(inputs.dtype, size=steps).unstack(tf.transpose(inputs, [1, 0, 2]))  # T x [B, D]
  masks = tf.TensorArray(tf.float32, size=steps).unstack(tf.transpose(mask)[:, :, None])      # T x [B, 1]

  def step(t, state):
    x, keep = frames.read(t), masks.read(t)
    new_state = []
    for layer, (kernel, bias) in enumerate(weights):
      c, h = state[2 * layer], state[2 * layer + 1]
      i, j, f, o = tf.split(tf.matmul(tf.concat([x, h], 1), kernel) + bias, 4, axis=1)  # 4 x [B, cells]
      new_c = c * tf.sigmoid(f + forget_bias) + tf.sigmoid(i) * tf.tanh(j)
      x = tf.tanh(new_c) * tf.sigmoid(o)
      new_state += [keep * new_c + (1.0 - keep) * c, keep * x + (1.0 - keep) * h]
    return t + 1, new_state

  zeros = tf.zeros([batch, cells], inputs.dtype)
  _, final = tf.while_loop(lambda t, _: t < steps, step, (tf.constant(0), [zeros] * (2 * num_layers)))
  if emit == "h":
    return final[-1]
  if emit != "state":
    raise InputError("lstm emit=%r: expected state or h" % emit)
  return tf.concat(final, axis=1)


def lstm_macs(input_size, cells, num_layers):
  """Multiply-adds of one step of `lstm`: the matmul [x, h] · W_l of each layer."""
  return sum((size + cells) * 4 * cells for size in [input_size] + [cells] * (num_layers - 1))
