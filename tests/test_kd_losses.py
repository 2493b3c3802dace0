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


def _numpy_rep(teacher, student, kind):
  """L_rep per kind, one video at a time with explicit loops."""
  values = []
  for t, s in zip(teacher["representation"].astype(np.float64), student["representation"].astype(np.float64)):
    error = sum((a - b) ** 2 for a, b in zip(t, s))
    if kind == "cosine":
      dot = sum(a * b for a, b in zip(t, s))
      values.append(1 - dot / (np.sqrt(sum(a * a for a in t)) * np.sqrt(sum(b * b for b in s))))
    else:
      values.append(error / sum(a * a for a in t))
  return sum(values) / len(values)


@pytest.mark.parametrize("kind", ["cosine", "relative"])
def test_scale_free_rep_losses_match_numpy_and_ignore_scale_and_size(kind):
  """--rep_loss=cosine and relative against NumPy; unchanged when both representations are scaled
  (the seed's mse grows with the square of the scale) and of one magnitude at any size H."""
  rng = np.random.RandomState(4)
  teacher, student = _outputs(rng, 5, hidden=9), _outputs(rng, 5, hidden=9)
  _, terms = _run(teacher, student, pred_weight=0, rep_weight=1.0, rep_loss=kind)
  np.testing.assert_allclose(terms["rep"], _numpy_rep(teacher, student, kind), rtol=1e-5)
  scaled = lambda d, c: dict(d, representation=d["representation"] * c)
  _, big = _run(scaled(teacher, 30.0), scaled(student, 30.0), pred_weight=0, rep_weight=1.0, rep_loss=kind)
  np.testing.assert_allclose(big["rep"], terms["rep"], rtol=1e-5)
  _, mse_big = _run(scaled(teacher, 30.0), scaled(student, 30.0), pred_weight=0, rep_weight=1.0)
  _, mse = _run(teacher, student, pred_weight=0, rep_weight=1.0)
  np.testing.assert_allclose(mse_big["rep"], 900 * mse["rep"], rtol=1e-5)
  wide = [_outputs(np.random.RandomState(5), 64, hidden=h) for h in (8, 512)]
  values = [_run(o, _outputs(np.random.RandomState(6), 64, hidden=o["representation"].shape[1]),
                 pred_weight=0, rep_weight=1.0, rep_loss=kind)[1]["rep"] for o in wide]
  assert abs(values[0] - values[1]) < 0.35 * max(values), values   # independent random vectors: ~1 or ~2
  with pytest.raises(InputError, match="--rep_loss='l1'"):
    _run(teacher, student, rep_loss="l1")


def test_balanced_terms_are_their_weight_times_ce_and_keep_the_gradient_direction():
  """--kd_balance: each term's value in the loss is weight x L_CE, whatever the representation's scale;
  its gradient is the term's own, rescaled by L_CE / L_term."""
  rng = np.random.RandomState(7)
  teacher, student = _outputs(rng, 6, hidden=9), _outputs(rng, 6, hidden=9)
  for scale in (1.0, 40.0):
    with tf.Graph().as_default():
      t = {k: tf.constant(v * (scale if k == "representation" else 1)) for k, v in teacher.items()}
      s = {k: tf.constant(v * (scale if k == "representation" else 1)) for k, v in student.items()}
      ce = tf.constant(2.5)
      total, terms = kd_losses.distillation_loss(ce, t, s, ce_weight=1.0, pred_weight=0.5, rep_weight=2.0,
                                                 balance=True)
      plain_rep = kd_losses.representation_loss(t["representation"], s["representation"])
      grads = tf.gradients(total - ce - 0.5 * 2.5 * terms["pred"] / tf.stop_gradient(terms["pred"]),
                           s["representation"])[0]
      own = tf.gradients(plain_rep, s["representation"])[0]
      with tf.Session() as sess:
        total_v, rep_v, g, g_own = sess.run([total, terms["rep"], grads, own])
    np.testing.assert_allclose(total_v, 2.5 + 0.5 * 2.5 + 2.0 * 2.5, rtol=1e-5)
    np.testing.assert_allclose(g, g_own * 2.0 * 2.5 / rep_v, rtol=1e-4, atol=1e-7)


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
