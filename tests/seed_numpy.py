"""NumPy transcription of the seed's numerics (zhongzhh8's train.py/nextvlad.py, linrongc's NeXtVLAD and
MixNeXtVladModel, the starter's metrics), written from their formulas, batch-wise as the seed computes
them, and keyed by the seed's own variable names (inside a prefix such as its `tower/` scope), with the
list of those variables and shapes. Tests compare this code against it."""

import numpy as np

SEED_RGB_OFFSET = 4.0 / 512
BN_EPSILON = 1e-3          # slim.batch_norm
CE_EPSILON = 1e-8          # the starter's CrossEntropyLoss


def whiten(batch, eigenvals, rgb_size):
  """The seed's GetInputDataBatch: (x - [4/512]*rgb ++ [0]*audio) * ([sqrt(eig) + 1e-4]*rgb ++ [1]*audio),
  on the whole zero-padded batch [B, 300, D]."""
  offset = np.concatenate([np.full(rgb_size, SEED_RGB_OFFSET), np.zeros(batch.shape[-1] - rgb_size)])
  scale = np.concatenate([np.sqrt(eigenvals[:rgb_size]) + 1e-4, np.ones(batch.shape[-1] - rgb_size)])
  return (batch - offset) * scale


# The seed's slim.batch_norm layers built fused (gating_bn: no fused= argument, slim's default; linrongc's
# mix_weights_bn: fused=True); every other one passes fused=False.
FUSED_SCOPES = ("gating_bn", "mix_weights_bn")


def batch_norm(x, p, scope, training=False, stats=None):
  """slim.batch_norm, centre and scale: moving statistics in inference mode, the statistics of every
  row of x (axis 0, padded frames included) in training mode; `stats` (a dict) records each training
  layer's (batch mean, biased batch variance, rows) under its scope."""
  mean, variance = ((x.mean(axis=0), x.var(axis=0)) if training
                    else (p[scope + "/moving_mean"], p[scope + "/moving_variance"]))
  if training and stats is not None:
    stats[scope] = (mean, variance, x.shape[0])
  return (x - mean) / np.sqrt(variance + BN_EPSILON) * p[scope + "/gamma"] + p[scope + "/beta"]


def moving_statistics_update(p, stats, decay, fused_scopes=FUSED_SCOPES):
  """The moving statistics after one training step of slim.batch_norm: moving -= (1 - decay)·(moving -
  batch value), where a fused layer's batch variance is Bessel-corrected, var·n/(n-1) (TensorFlow's
  FusedBatchNorm), and a non-fused one's is the biased var. {seed variable name: new value}."""
  updated = {}
  for scope, (mean, variance, rows) in stats.items():
    if scope.rsplit("/", 1)[-1] in fused_scopes:
      variance = variance * rows / max(rows - 1, 1)
    for name, value in (("moving_mean", mean), ("moving_variance", variance)):
      moving = p[scope + "/" + name]
      updated[scope + "/" + name] = moving - (1.0 - decay) * (moving - value)
  return updated


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def nextvlad(inputs, mask, p, scope, cluster_size, groups, expansion, training=False, stats=None):
  """NeXtVLAD.forward: inputs [B, M, N], mask [B, M] -> [B, (λN/G)·K] (no dropout inside)."""
  batch, max_frames, feature_size = inputs.shape
  expanded = inputs @ p[scope + "/fully_connected/weights"] + p[scope + "/fully_connected/biases"]
  attention = sigmoid(expanded @ p[scope + "/fully_connected_1/weights"]
                      + p[scope + "/fully_connected_1/biases"]) * mask[:, :, None]
  attention = attention.reshape(batch, max_frames * groups, 1)
  group_size = expansion * feature_size // groups
  activation = expanded.reshape(-1, expansion * feature_size) @ p[scope + "/cluster_weights"]
  activation = batch_norm(activation, p, scope + "/cluster_bn", training, stats)
  activation = activation.reshape(batch, max_frames * groups, cluster_size)
  activation = np.exp(activation - activation.max(axis=-1, keepdims=True))
  activation = activation / activation.sum(axis=-1, keepdims=True) * attention
  a = activation.sum(axis=-2, keepdims=True) * p[scope + "/cluster_weights2"]       # [B, λN/G, K]
  vlad = np.transpose(np.transpose(activation, (0, 2, 1))
                      @ expanded.reshape(batch, max_frames * groups, group_size), (0, 2, 1)) - a
  vlad = vlad / np.sqrt(np.maximum((vlad ** 2).sum(axis=1, keepdims=True), 1e-12))
  return batch_norm(vlad.reshape(batch, cluster_size * group_size), p, scope + "/vlad_bn", training, stats)


def nextvlad_model(model_input, num_frames, p, rgb_size, cluster_size, groups, expansion,
                   training=False, base="", vlad_scopes=("video_VLAD", "audio_VLAD"), stats=None):
  """NeXtVLADModel_teacher/_student.create_model (linrongc's nextvlad_model for one branch, whose scopes
  are video_vlad/audio_vlad) with LogisticModel on top, without dropout (inference, or drop_rate 0):
  (representation [B, H], logits [B, C]). Names are under `base`; model_input is already whitened; the
  mask covers its M frames."""
  mask = (np.arange(model_input.shape[1])[None, :] < np.asarray(num_frames)[:, None]).astype(np.float64)
  vlad = np.concatenate([
      nextvlad(model_input[:, :, :rgb_size], mask, p, base + vlad_scopes[0], cluster_size, groups,
               expansion, training, stats),
      nextvlad(model_input[:, :, rgb_size:], mask, p, base + vlad_scopes[1], cluster_size // 2,
               groups // 2, expansion, training, stats)], axis=1)
  activation = batch_norm(vlad @ p[base + "hidden1_weights"], p, base + "hidden1_bn", training, stats)
  gates = np.maximum(batch_norm(activation @ p[base + "gating_weights_1"], p, base + "gating_bn",
                                training, stats), 0.0)
  activation = activation * sigmoid(gates @ p[base + "gating_weights_2"])
  logits = activation @ p[base + "fully_connected/weights"] + p[base + "fully_connected/biases"]
  return activation, logits


def mix_nextvlad_model(model_input, num_frames, p, rgb_size, cluster_size, groups, expansion,
                       mix_number, base=""):
  """linrongc's MixNeXtVladModel in inference mode: (mixture weights [B, n], branch logits [B, n, C],
  mixed logits, mixture-weighted gated hidden vectors: this code's representation)."""
  mean = batch_norm(model_input.mean(axis=1), p, base + "mix_weights_bn")
  weights = mean @ p[base + "mix_weights/weights"] + p[base + "mix_weights/biases"]
  weights = np.exp(weights - weights.max(axis=-1, keepdims=True))
  weights /= weights.sum(axis=-1, keepdims=True)
  outputs = [nextvlad_model(model_input, num_frames, p, rgb_size, cluster_size, groups, expansion,
                            base=base + "branch_%d/" % n, vlad_scopes=("video_vlad", "audio_vlad"))
             for n in range(mix_number)]
  hidden = np.stack([h for h, _ in outputs], axis=1)
  logits = np.stack([z for _, z in outputs], axis=1)
  return (weights, logits, np.sum(weights[:, :, None] * logits, axis=1),
          np.sum(weights[:, :, None] * hidden, axis=1))


def seed_variables(prefix, feature_sizes, groups, clusters, hidden, expansion, reduction, classes,
                   mix_number=None):
  """{name: shape} of the model variables the seed's NeXtVLADModel (mix_number None) or linrongc's
  MixNeXtVladModel creates under `prefix`, with LogisticModel on top."""
  def bn(scope, size):
    return {"%s/%s" % (scope, v): [size] for v in ("beta", "gamma", "moving_mean", "moving_variance")}

  def vlad(scope, size, k, g):
    expanded = expansion * size
    shapes = {scope + "/fully_connected/weights": [size, expanded],
              scope + "/fully_connected/biases": [expanded],
              scope + "/fully_connected_1/weights": [expanded, g],
              scope + "/fully_connected_1/biases": [g],
              scope + "/cluster_weights": [expanded, g * k],
              scope + "/cluster_weights2": [1, expanded // g, k]}
    shapes.update(bn(scope + "/cluster_bn", g * k))
    shapes.update(bn(scope + "/vlad_bn", expanded // g * k))
    return shapes

  def model(base, vlad_scopes):
    rgb, audio = feature_sizes
    shapes = vlad(base + vlad_scopes[0], rgb, clusters, groups)
    shapes.update(vlad(base + vlad_scopes[1], audio, clusters // 2, groups // 2))
    vlad_size = expansion * rgb // groups * clusters + expansion * audio // (groups // 2) * (clusters // 2)
    shapes[base + "hidden1_weights"] = [vlad_size, hidden]
    shapes.update(bn(base + "hidden1_bn", hidden))
    shapes[base + "gating_weights_1"] = [hidden, hidden // reduction]
    shapes.update(bn(base + "gating_bn", hidden // reduction))
    shapes[base + "gating_weights_2"] = [hidden // reduction, hidden]
    shapes[base + "fully_connected/weights"] = [hidden, classes]
    shapes[base + "fully_connected/biases"] = [classes]
    return shapes

  if mix_number is None:
    return model(prefix, ("video_VLAD", "audio_VLAD"))
  shapes = bn(prefix + "mix_weights_bn", sum(feature_sizes))
  shapes[prefix + "mix_weights/weights"] = [sum(feature_sizes), mix_number]
  shapes[prefix + "mix_weights/biases"] = [mix_number]
  for n in range(mix_number):
    shapes.update(model(prefix + "branch_%d/" % n, ("video_vlad", "audio_vlad")))
  return shapes


def kd_student_loss(labels, student_predictions, teacher_predictions, student_representation,
                    teacher_representation):
  """build_graph_student's final_loss for one tower: label_loss + 0.01 * pred_loss + 0.001 * rep_loss,
  the label loss a batch mean, the other two reduce_sum over the tower batch; no L2 term."""
  ce = -(labels * np.log(student_predictions + CE_EPSILON)
         + (1 - labels) * np.log(1 - student_predictions + CE_EPSILON))
  label_loss = ce.sum(axis=1).mean()
  pred_loss = ((teacher_predictions - student_predictions) ** 2).sum()
  rep_loss = ((teacher_representation - student_representation) ** 2).sum()
  return label_loss + 0.01 * pred_loss + 0.001 * rep_loss


def clip_gradient_norms(gradients, max_norm):
  """utils.clip_gradient_norms: tf.clip_by_norm on each gradient separately."""
  return [g * max_norm / max(np.sqrt((g ** 2).sum()), max_norm) for g in gradients]


def precision_at_equal_recall_rate(predictions, actuals):
  """The starter's PERR: per video, precision of its top-n (n = its label count); a video without
  labels takes the whole row as its "top" and scores 0; mean over all videos."""
  total = 0.0
  for row in range(actuals.shape[0]):
    num_labels = int(actuals[row].sum())
    top = np.argpartition(predictions[row], -num_labels)[-num_labels:]
    total += sum(actuals[row][i] for i in top if predictions[row][i] > 0) / top.size
  return total / actuals.shape[0]


def strided_positions(k, max_frames=300):
  """The student's `model_input[:, 0:300:frame_step, :]` with frame_step = int(300 / k_frame)."""
  return np.arange(max_frames)[0:max_frames:int(max_frames / k)]


def slim_truncated_std(fan_in):
  """Std of slim's variance_scaling_initializer() values: a normal of stddev sqrt(1.3 * 2 / fan_in)
  truncated at 2 stddev keeps 0.8796 of its std."""
  return np.sqrt(1.3 * 2.0 / fan_in) * 0.87962566
