"""Label losses (the starter's): per-video sum over classes, mean over the batch."""

import tensorflow.compat.v1 as tf

import utils

EPSILON = 1e-8  # the starter's and the seed's


class BaseLoss(object):
  """calculate_loss(predictions, labels, **unused_params) -> scalar loss of a batch."""


class CrossEntropyLoss(BaseLoss):
  """Binary cross-entropy of each class's probability, with EPSILON inside the logs (the starter's),
  summed over classes and averaged over videos."""

  def calculate_loss(self, predictions, labels, **unused_params):
    labels = tf.cast(labels, tf.float32)
    # max(1 - p, 0) is 1 - p for a probability; it stops TensorFlow's graph optimiser from folding the
    # constants into (1 + EPSILON) - p, which is 1 - p in float32 and gives log(0) at p = 1.
    loss = -(labels * tf.log(predictions + EPSILON)
             + (1.0 - labels) * tf.log(tf.maximum(1.0 - predictions, 0.0) + EPSILON))
    return tf.reduce_mean(tf.reduce_sum(loss, axis=1))


class HingeLoss(BaseLoss):
  """max(0, b - y·prediction) with labels y mapped to {-1, +1}, summed over classes, averaged over
  videos."""

  def calculate_loss(self, predictions, labels, b=1.0, **unused_params):
    signs = 2.0 * tf.cast(labels, tf.float32) - 1.0
    return tf.reduce_mean(tf.reduce_sum(tf.maximum(0.0, b - signs * predictions), axis=1))


class SoftmaxLoss(BaseLoss):
  """Cross-entropy of a softmax over the classes' scores against the labels normalised to sum 1,
  averaged over videos (log-softmax, the stable form of the starter's log(softmax))."""

  def calculate_loss(self, predictions, labels, **unused_params):
    labels = tf.cast(labels, tf.float32)
    targets = labels / tf.maximum(tf.reduce_sum(labels, axis=1, keepdims=True), 1e-7)
    return tf.reduce_mean(-tf.reduce_sum(targets * tf.nn.log_softmax(predictions), axis=1))


LOSSES = {cls.__name__: cls for cls in (CrossEntropyLoss, HingeLoss, SoftmaxLoss)}


def get_loss(name):
  """An instance of the label loss class named `name` (--label_loss)."""
  return utils.lookup(LOSSES, name, "label_loss")()
