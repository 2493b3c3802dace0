"""Distillation terms against NumPy, batch-size independence, weights, and no gradient to the teacher."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kd_losses
from utils import InputError


def _outputs(rng, batch, classes=5, hidden=7):
  logits = rng.randn(batch, classes).astype(np.float32)
  return {"logits": logits, "predictions": 1 / (1 + np.exp(-logits)),
          "representation": rng.randn(batch, hidden).astype(np.float32)}


def _numpy_terms(teacher, student, temperature=2.0):
  batch = len(teacher["logits"])
  rep = sum(sum((t - s) ** 2 for t, s in zip(teacher["representation"][i], student["representation"][i]))
            for i in range(batch)) / batch
  pred = sum(sum((t - s) ** 2 for t, s in zip(teacher["predictions"][i], student["predictions"][i]))
             for i in range(batch)) / batch
  kl = 0.0
  for i in range(batch):
    for zt, zs in zip(teacher["logits"][i], student["logits"][i]):
      p = 1 / (1 + np.exp(-zt / temperature))
      q = 1 / (1 + np.exp(-zs / temperature))
      kl += p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
  return rep, pred, temperature ** 2 * kl / batch


def _run(teacher, student, **kwargs):
  with tf.Graph().as_default():
    t = {k: tf.constant(v) for k, v in teacher.items()}
    s = {k: tf.constant(v) for k, v in student.items()}
    total, terms = kd_losses.distillation_loss(tf.constant(0.5), t, s, **kwargs)
    with tf.Session() as sess:
      return sess.run([total, terms])


def test_terms_match_numpy():
  rng = np.random.RandomState(0)
  teacher, student = _outputs(rng, 4), _outputs(rng, 4)
  rep, pred, kl = _numpy_terms(teacher, student)
  total, terms = _run(teacher, student, ce_weight=1.0, pred_weight=0.8, rep_weight=0.08)
  np.testing.assert_allclose([terms["rep"], terms["pred"]], [rep, pred], rtol=1e-5)
  np.testing.assert_allclose(total, 0.5 + 0.8 * pred + 0.08 * rep, rtol=1e-5)
  _, kl_terms = _run(teacher, student, pred_loss="kl", temperature=2.0, rep_weight=0)
  np.testing.assert_allclose(kl_terms["pred"], kl, rtol=1e-4)
  assert "rep" not in kl_terms, "a zero weight removes its term"


def test_loss_does_not_depend_on_batch_size():
  rng = np.random.RandomState(1)
  teacher, student = _outputs(rng, 3), _outputs(rng, 3)
  small, _ = _run(teacher, student)
  tiled = lambda d: {k: np.tile(v, (5, 1)) for k, v in d.items()}
  large, _ = _run(tiled(teacher), tiled(student))
  np.testing.assert_allclose(small, large, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mse", "kl"])
def test_no_gradient_reaches_the_teacher(kind):
  with tf.Graph().as_default():
    t_logits = tf.constant(np.random.RandomState(3).randn(2, 4).astype(np.float32))
    s_logits = tf.constant(np.zeros((2, 4), np.float32))
    teacher = {"logits": t_logits, "predictions": tf.sigmoid(t_logits), "representation": t_logits}
    student = {"logits": s_logits, "predictions": tf.sigmoid(s_logits), "representation": s_logits}
    total, _ = kd_losses.distillation_loss(tf.constant(0.0), teacher, student, pred_loss=kind)
    grad_teacher, grad_student = tf.gradients(total, [t_logits, s_logits])
    assert grad_teacher is None and grad_student is not None


def test_zero_when_student_equals_teacher_and_bad_kind():
  rng = np.random.RandomState(4)
  teacher = _outputs(rng, 3)
  for kind in ("mse", "kl"):
    _, terms = _run(teacher, teacher, pred_loss=kind)
    assert abs(terms["pred"]) < 1e-5 and abs(terms["rep"]) < 1e-6
  with pytest.raises(InputError, match="--pred_loss='l1'"):
    _run(teacher, teacher, pred_loss="l1")
