"""The seed's (zhongzhh8) and linrongc's forward pass in inference mode, transcribed to NumPy from their
code, on a dict of their checkpoint variables (their names, under a prefix such as `teacher/tower/`),
and the list of those variables with their shapes.

Inference mode: dropout off, slim batch norm with the moving statistics and epsilon 1e-3. The caller's
frames are the padded [B, M, D] batch (M = 300 in the seed), rgb first; the seed whitens the rgb part
of every row, padded rows included, before the model.
"""

import numpy as np


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


def whiten(frames, rgb_size, eigenvals):
  out = np.array(frames, np.float64)
  out[:, :, :rgb_size] = (out[:, :, :rgb_size] - 4.0 / 512.0) * (np.sqrt(eigenvals[:rgb_size, 0]) + 1e-4)
  return out


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _bn(x, p, scope):
  return ((x - p[scope + "/moving_mean"]) / np.sqrt(p[scope + "/moving_variance"] + 1e-3)
          * p[scope + "/gamma"] + p[scope + "/beta"])


def _l2_normalize(x, axis):
  return x / np.sqrt(np.maximum(np.sum(x * x, axis=axis, keepdims=True), 1e-12))


def nextvlad(frames, mask, p, scope, clusters, groups, expansion):
  """The seed's NeXtVLAD.forward: frames [B, M, N], mask [B, M] -> [B, K * λN/G]."""
  batch, max_frames, size = frames.shape
  expanded = frames @ p[scope + "/fully_connected/weights"] + p[scope + "/fully_connected/biases"]
  attention = _sigmoid(expanded @ p[scope + "/fully_connected_1/weights"]
                       + p[scope + "/fully_connected_1/biases"]) * mask[:, :, None]
  attention = attention.reshape(batch, max_frames * groups, 1)
  group_size = expansion * size // groups
  activation = expanded.reshape(-1, expansion * size) @ p[scope + "/cluster_weights"]
  activation = _bn(activation, p, scope + "/cluster_bn").reshape(batch, max_frames * groups, clusters)
  activation = _softmax(activation) * attention
  a = activation.sum(axis=1, keepdims=True) * p[scope + "/cluster_weights2"]
  vlad = np.transpose(activation, (0, 2, 1)) @ expanded.reshape(batch, max_frames * groups, group_size)
  vlad = np.transpose(vlad, (0, 2, 1)) - a
  vlad = _l2_normalize(vlad, 1).reshape(batch, clusters * group_size)
  return _bn(vlad, p, scope + "/vlad_bn")


def nextvlad_model(frames, num_frames, p, base, hp, vlad_scopes=("video_VLAD", "audio_VLAD")):
  """The seed's NeXtVLADModel (linrongc's nextvlad_model for one branch): -> (gated hidden, logits)."""
  rgb = hp["feature_sizes"][0]
  mask = (np.arange(frames.shape[1])[None, :] < np.asarray(num_frames)[:, None]).astype(np.float64)
  vlad = np.concatenate([
      nextvlad(frames[:, :, :rgb], mask, p, base + vlad_scopes[0], hp["clusters"], hp["groups"],
               hp["expansion"]),
      nextvlad(frames[:, :, rgb:], mask, p, base + vlad_scopes[1], hp["clusters"] // 2,
               hp["groups"] // 2, hp["expansion"])], axis=1)
  activation = _bn(vlad @ p[base + "hidden1_weights"], p, base + "hidden1_bn")
  gates = np.maximum(_bn(activation @ p[base + "gating_weights_1"], p, base + "gating_bn"), 0.0)
  activation = activation * _sigmoid(gates @ p[base + "gating_weights_2"])
  return activation, activation @ p[base + "fully_connected/weights"] + p[base + "fully_connected/biases"]


def mix_nextvlad_model(frames, num_frames, p, base, hp, mix_number):
  """linrongc's MixNeXtVladModel: -> (mixture weights [B, n], branch logits [B, n, C], mixed logits,
  mixture-weighted gated hidden vectors (this code's representation))."""
  mean = _bn(frames.mean(axis=1), p, base + "mix_weights_bn")
  weights = _softmax(mean @ p[base + "mix_weights/weights"] + p[base + "mix_weights/biases"])
  outputs = [nextvlad_model(frames, num_frames, p, base + "branch_%d/" % n, hp, ("video_vlad", "audio_vlad"))
             for n in range(mix_number)]
  hidden = np.stack([h for h, _ in outputs], axis=1)
  logits = np.stack([z for _, z in outputs], axis=1)
  return (weights, logits, np.sum(weights[:, :, None] * logits, axis=1),
          np.sum(weights[:, :, None] * hidden, axis=1))
