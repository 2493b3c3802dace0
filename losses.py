"""Label losses (the starter's): per-video sum over classes, mean over the batch."""

import tensorflow.compat.v1 as tf

from utils import InputError

EPSILON = 1e-5


class BaseLoss(object):
  """calculate_loss(predictions, labels) -> scalar."""


class CrossEntropyLoss(BaseLoss):
  """Binary cross-entropy of each class, summed over classes, averaged over videos."""

  def calculate_loss(self, predictions, labels, **unused_params):
    labels = tf.cast(labels, tf.float32)
    loss = -(labels * tf.log(predictions + EPSILON) + (1 - labels) * tf.log(1 - predictions + EPSILON))
    return tf.reduce_mean(tf.reduce_sum(loss, axis=1))


class HingeLoss(BaseLoss):
  """Hinge loss with labels mapped to {-1, +1}, summed over classes, averaged over videos."""

  def calculate_loss(self, predictions, labels, b=1.0, **unused_params):
    signs = 2 * tf.cast(labels, tf.float32) - 1
    return tf.reduce_mean(tf.reduce_sum(tf.maximum(0.0, b - signs * predictions), axis=1))


class SoftmaxLoss(BaseLoss):
  """Cross-entropy of a softmax over classes against the labels normalised to sum 1."""

  def calculate_loss(self, predictions, labels, **unused_params):
    labels = tf.cast(labels, tf.float32)
    norm = tf.maximum(tf.reduce_sum(labels, axis=1, keepdims=True), EPSILON)
    softmax = tf.nn.softmax(predictions)
    return tf.reduce_mean(-tf.reduce_sum(labels / norm * tf.log(softmax + EPSILON), axis=1))


def get_loss(name):
  losses = {cls.__name__: cls for cls in (CrossEntropyLoss, HingeLoss, SoftmaxLoss)}
  if name not in losses:
    raise InputError("--label_loss=%r: expected one of %s" % (name, ", ".join(sorted(losses))))
  return losses[name]()
