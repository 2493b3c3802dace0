"""NetVLAD with context gating (Miech, Laptev, Sivic 2017; WILLOW's NetVLADModelLF), the model of the
paper's Table 5 (docs/BACKGROUND.md, "Other model families").

For frames x_t [D] (preprocessed: L2-normalised rgb‖audio by default, as WILLOW's input), t < n valid:
  x_t <- BN(x_t)                                                   (input_bn, over the valid frames)
  per feature (video_VLAD on rgb with K clusters, audio_VLAD on audio with K/2), features x_t [N]:
    a_t = softmax_K(BN(x_t · W)) · m_t      W [N, K], no bias; m_t the frame mask   (cluster_bn)
    V[d, k] = Σ_t a_t[k] · (x_t[d] - c[d, k])                      c [N, K] free centres
    (--lightvlad: V[d, k] = Σ_t a_t[k] · x_t[d], no centres)
    V[:, k] /= ||V[:, k]|| (intra-normalisation); flatten d-major to [N·K]; v /= ||v||
  y = concat(video, audio) · W_h + b_h      W_h [N·K + N'·K', H], no activation (WILLOW's winning
                                            --netvlad_relu=False setting)
  E = y ⊙ sigmoid(BN(y · G)),  G [H, H], no bias   (--gating; E = y without it)
  -> classifier(E); E is the representation.
Padding is masked, never sampled: a padded frame gets assignment 0 and is left out of every batch
norm's statistics. WILLOW instead samples --iterations frames (300 in its winning command) from the
valid ones with replacement, which weights each valid frame by a random multiplicity; V is a sum over
frames and the intra-normalisation removes its overall scale, so each valid frame counted once is that
sum's expectation.
"""

import tensorflow.compat.v1 as tf

import frame_level_models
import layers
from utils import InputError

BRANCH_SCOPES = ("video_VLAD", "audio_VLAD")


def netvlad_layer(rows, row_mask, batch, cluster_size, is_training, scope, decay, light=False):
  """rows [B·M, N] (the frames of B videos), row_mask [B·M] -> [B, N·K]."""
  feature_size = rows.shape.as_list()[-1]
  with tf.variable_scope(scope):
    assignment = layers.dense(rows, cluster_size, use_bias=False, scope="cluster")     # [B·M, K]
    assignment = layers.batch_norm(assignment, is_training, "cluster_bn", decay=decay, mask=row_mask)
    assignment = tf.nn.softmax(assignment) * row_mask[:, None]
    assignment = tf.reshape(assignment, [batch, -1, cluster_size])                     # [B, M, K]
    frames = tf.reshape(rows, [batch, -1, feature_size])                               # [B, M, N]
    vlad = tf.matmul(frames, assignment, transpose_a=True)                             # [B, N, K]
    if not light:
      centres = tf.get_variable("cluster_centres", [1, feature_size, cluster_size])
      vlad -= tf.reduce_sum(assignment, axis=1, keepdims=True) * centres
    vlad = tf.nn.l2_normalize(vlad, axis=1)
    vlad = tf.reshape(vlad, [batch, feature_size * cluster_size])                      # d-major
    return tf.nn.l2_normalize(vlad, axis=1)


class NetVLADModelLF(frame_level_models.FrameModel):
  """Scopes (inside the caller's): input_bn/, video_VLAD/ and audio_VLAD/ (each cluster/weights,
  cluster_bn/, cluster_centres), hidden1/ (weights, biases), gating/ (weights), gating_bn/,
  classifier/."""

  def __init__(self, netvlad_cluster_size=256, netvlad_hidden_size=1024, gating=True, lightvlad=False,
               **hparams):
    self.cluster_size, self.hidden_size = int(netvlad_cluster_size), int(netvlad_hidden_size)
    self.gating, self.light = bool(gating), bool(lightvlad)
    super(NetVLADModelLF, self).__init__(**hparams)
    if len(self.feature_sizes) not in (1, 2) or self.cluster_size < 2 or self.hidden_size < 1:
      raise InputError("--feature_sizes=%s, --netvlad_cluster_size=%d, --netvlad_hidden_size=%d: "
                       "NetVLADModelLF takes one or two features (rgb, audio), at least 2 clusters (the "
                       "audio branch has half) and a positive hidden size"
                       % (",".join(map(str, self.feature_sizes)), self.cluster_size, self.hidden_size))

  def _branches(self):
    """(scope, feature size, clusters) per feature: the audio branch has K/2 clusters."""
    return [(scope, size, self.cluster_size // divisor)
            for scope, size, divisor in zip(BRANCH_SCOPES, self.feature_sizes, (1, 2))]

  def create_model(self, model_input, num_frames, vocab_size, is_training, **unused_params):
    frames, mask = self._frames(model_input, num_frames)                        # [B, M, D], [B, M]
    depth, batch = frames.shape.as_list()[-1], tf.shape(frames)[0]
    rows, row_mask = tf.reshape(frames, [-1, depth]), tf.reshape(mask, [-1])    # [B·M, D], [B·M]
    rows = layers.batch_norm(rows, is_training, "input_bn", decay=self.batchnorm_decay, mask=row_mask)
    vlads, offset = [], 0
    for scope, size, clusters in self._branches():
      vlads.append(netvlad_layer(rows[:, offset:offset + size], row_mask, batch, clusters, is_training,
                                 scope, self.batchnorm_decay, self.light))      # [B, N·K]
      offset += size
    hidden = layers.dense(tf.concat(vlads, axis=1), self.hidden_size, scope="hidden1")  # [B, H]
    if self.gating:
      gates = layers.dense(hidden, self.hidden_size, use_bias=False, scope="gating")
      gates = layers.batch_norm(gates, is_training, "gating_bn", decay=self.batchnorm_decay)
      hidden *= tf.sigmoid(gates)
    return self._classify(hidden, vocab_size, is_training)

  def macs(self, frames, vocab_size):
    """Multiply-adds per video of `frames` frames: per frame the cluster assignment and the aggregation
    (N·K each per branch), then the hidden layer, the gating and the classifier."""
    per_frame = sum(2 * size * clusters for _, size, clusters in self._branches())
    vlad_size = sum(size * clusters for _, size, clusters in self._branches())
    return (frames * per_frame + vlad_size * self.hidden_size
            + (self.hidden_size ** 2 if self.gating else 0)
            + self.classifier.macs(self.hidden_size, vocab_size))
