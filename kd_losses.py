"""Distillation terms of "Efficient Video Classification Using Fewer Frames" (CVPR 2019).

Every term is a per-video sum over its dimensions, averaged over the batch, so that its weight does not
depend on the batch size. The seed summed L_pred and L_rep over its whole tower batch of 80 with
weights 0.01 and 0.001; on batch means those are 0.8 and 0.08 (the defaults here).
"""

import tensorflow.compat.v1 as tf

from utils import InputError

PRED_LOSSES = ("mse", "kl")


def representation_loss(teacher_representation, student_representation):
  """L_rep = mean over videos of ||E_T - E_S||^2. The teacher side is a constant."""
  diff = tf.stop_gradient(teacher_representation) - student_representation
  return tf.reduce_mean(tf.reduce_sum(tf.square(diff), axis=1))


def prediction_loss(teacher, student, kind="mse", temperature=1.0):
  """L_pred between teacher and student outputs (dicts with `predictions` and `logits`).

  mse (the paper's): mean over videos of ||P_T - P_S||^2 over the class probabilities.
  kl: multi-label soft targets -- per class, KL(Bernoulli(sigmoid(z_T/T)) || Bernoulli(sigmoid(z_S/T)))
  summed over classes, times T^2 (Hinton et al.) so gradients keep their scale as T changes.
  """
  if kind == "mse":
    diff = tf.stop_gradient(teacher["predictions"]) - student["predictions"]
    return tf.reduce_mean(tf.reduce_sum(tf.square(diff), axis=1))
  if kind == "kl":
    teacher_logits = tf.stop_gradient(teacher["logits"]) / temperature
    student_logits = student["logits"] / temperature
    p_t = tf.sigmoid(teacher_logits)
    # KL(p||q) = p log p/q + (1-p) log (1-p)/(1-q); written with softplus for stability.
    cross = (p_t * tf.nn.softplus(-student_logits) + (1.0 - p_t) * tf.nn.softplus(student_logits))
    entropy = (p_t * tf.nn.softplus(-teacher_logits) + (1.0 - p_t) * tf.nn.softplus(teacher_logits))
    return temperature ** 2 * tf.reduce_mean(tf.reduce_sum(cross - entropy, axis=1))
  raise InputError("--pred_loss=%r: expected one of %s" % (kind, ", ".join(PRED_LOSSES)))


def distillation_loss(ce_loss, teacher, student, ce_weight=1.0, pred_weight=0.8, rep_weight=0.08,
                      pred_loss="mse", temperature=1.0):
  """L = ce_weight*L_CE + pred_weight*L_pred + rep_weight*L_rep; returns (total, dict of the terms).
  A term with weight 0 is not built, so every loss variant of the paper's Table 1 is a flag setting."""
  terms = {"ce": ce_loss}
  total = ce_weight * ce_loss if ce_weight else 0.0
  if pred_weight:
    terms["pred"] = prediction_loss(teacher, student, pred_loss, temperature)
    total += pred_weight * terms["pred"]
  if rep_weight:
    terms["rep"] = representation_loss(teacher["representation"], student["representation"])
    total += rep_weight * terms["rep"]
  return tf.convert_to_tensor(total), terms
