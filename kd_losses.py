"""Distillation terms of "Efficient Video Classification Using Fewer Frames" (CVPR 2019).

Every term is a per-video sum over its dimensions, averaged over the batch, so that its weight does not
depend on the batch size. The seed summed L_pred and L_rep over its whole tower batch of 80 with
weights 0.01 and 0.001; on batch means those are 0.8 and 0.08 (the defaults here).
"""

import tensorflow.compat.v1 as tf

from utils import InputError

PRED_LOSSES = ("mse", "kl")
REP_LOSSES = ("mse", "cosine", "relative")


def representation_loss(teacher_representation, student_representation, kind="mse"):
  """L_rep between the video representations E_T, E_S [B, H], a mean over videos. The teacher side is a
  constant.

  mse (the paper's and the seed's): ||E_T - E_S||^2, which grows with H and with the scale of E.
  cosine: 1 - E_T·E_S / (||E_T|| ||E_S||), in [0, 2] whatever H and the scale.
  relative: ||E_T - E_S||^2 / ||E_T||^2, the squared error relative to the teacher's energy (0 when
  equal, 1 for E_S = 0), also free of H and the scale.
  """
  teacher = tf.stop_gradient(teacher_representation)
  if kind == "mse":
    return tf.reduce_mean(tf.reduce_sum(tf.square(teacher - student_representation), axis=1))
  if kind == "cosine":
    cosine = tf.reduce_sum(tf.nn.l2_normalize(teacher, axis=1, epsilon=1e-12)
                           * tf.nn.l2_normalize(student_representation, axis=1, epsilon=1e-12), axis=1)
    return tf.reduce_mean(1.0 - cosine)
  if kind == "relative":
    error = tf.reduce_sum(tf.square(teacher - student_representation), axis=1)
    return tf.reduce_mean(error / tf.maximum(tf.reduce_sum(tf.square(teacher), axis=1), 1e-12))
  raise InputError("--rep_loss=%r: expected one of %s" % (kind, ", ".join(REP_LOSSES)))


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
                      pred_loss="mse", temperature=1.0, rep_loss="mse", balance=False):
  """L = ce_weight*L_CE + pred_weight*L_pred + rep_weight*L_rep; returns (total, dict of the terms).
  A term with weight 0 is not built, so every loss variant of the paper's Table 1 is a flag setting.

  balance (--kd_balance): each distillation term is weighted relative to L_CE,
      L = ce_weight*L_CE + Σ_term weight_term * sg(L_CE / L_term) * L_term,
  (sg: no gradient through the ratio; L_CE of the batch, L_term floored at 1e-12), so its loss value is
  weight_term times L_CE at every step, whatever the scale of the representation, its size or the
  number of classes; its gradient is that of L_term rescaled. Weight 1 makes a term as large as L_CE."""
  terms = {"ce": ce_loss}
  total = ce_weight * ce_loss if ce_weight else 0.0
  reference = tf.stop_gradient(ce_loss)

  def weighted(weight, term):
    if not balance:
      return weight * term
    return weight * reference / tf.maximum(tf.stop_gradient(term), 1e-12) * term

  if pred_weight:
    terms["pred"] = prediction_loss(teacher, student, pred_loss, temperature)
    total += weighted(pred_weight, terms["pred"])
  if rep_weight:
    terms["rep"] = representation_loss(teacher["representation"], student["representation"], rep_loss)
    total += weighted(rep_weight, terms["rep"])
  return tf.convert_to_tensor(total), terms
