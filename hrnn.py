"""H-RNN, the hierarchical LSTM of "Efficient Video Classification Using Fewer Frames" (the base model of
the paper's Tables 1-4; docs/BACKGROUND.md, "Other model families").

For frames x [B, M, D] (preprocessed; the paper's code L2-normalises each rgb‖audio frame), n valid:
  cut the M frames into ceil(M/L) blocks of L (the last one padded);
  lower LSTM (hrnn_layers × hrnn_cells, weights shared by every block) over each block's valid frames
    -> one vector per block (an empty block keeps the zero state);
  upper LSTM (same size) over the block vectors of the non-empty blocks only, the first ceil(n/L);
  E = the upper LSTM's final vector, the representation; classifier(E) -> logits.
Each level emits, per --hrnn_representation, its final state [c_1, h_1, ..., c_L, h_L] (the paper's
code: 2·layers·cells values) or its top layer's h (the paper's text: cells values). L is
--hrnn_block_frames for a teacher (model_type teacher) and --hrnn_student_block_frames for a student
or a KD student, so one teacher's 300 frames and a student's k frames each get their own blocks.

Where the paper and its code differ (docs/BACKGROUND.md lists each, with the flag that picks the other):
E = state (code) or h (text); block lengths 15 / 6 (code) or 20 / 5 or 3 (text); the student's own
classifier (code) or the teacher's (text: "shares the output layer", train.py
--share_teacher_classifier); the code's KD loss (a KL between L1-renormalised probabilities, L_rep added
twice) against the text's squared errors (this project's L_pred and L_rep; --rep_weight doubles L_rep).
"""

import tensorflow.compat.v1 as tf

import frame_level_models
import layers
from utils import InputError

REPRESENTATIONS = ("state", "h")


class HierarchicalRnnModel(frame_level_models.FrameModel):
  """Scopes (inside the caller's): lower_lstm/, upper_lstm/ (each layer_<l>/weights, biases),
  classifier/. No batch norm, no dropout. Input preprocessing by default: l2 (the paper's code)."""

  def __init__(self, model_type="teacher", hrnn_block_frames=15, hrnn_student_block_frames=6,
               hrnn_cells=1024, hrnn_layers=2, hrnn_representation="state", **hparams):
    self.block_frames = int(hrnn_block_frames if model_type == "teacher" else hrnn_student_block_frames)
    self.cells, self.num_layers = int(hrnn_cells), int(hrnn_layers)
    self.representation = hrnn_representation
    if self.block_frames < 1 or self.cells < 1 or self.num_layers < 1:
      raise InputError("--hrnn_block_frames=%s, --hrnn_student_block_frames=%s, --hrnn_cells=%s, "
                       "--hrnn_layers=%s: expected positive integers"
                       % (hrnn_block_frames, hrnn_student_block_frames, hrnn_cells, hrnn_layers))
    if hrnn_representation not in REPRESENTATIONS:
      raise InputError("--hrnn_representation=%r: expected one of %s"
                       % (hrnn_representation, ", ".join(REPRESENTATIONS)))
    super(HierarchicalRnnModel, self).__init__(**hparams)

  def level_size(self):
    """Values each level emits: the block vectors' and E's size."""
    return self.cells * (2 * self.num_layers if self.representation == "state" else 1)

  def create_model(self, model_input, num_frames, vocab_size, is_training, **unused_params):
    """model_input [B, M, D], num_frames [B] -> dict with `logits`, `predictions`, `representation` E."""
    frames, mask = self._frames(model_input, num_frames)                        # [B, M, D], [B, M]
    depth, size = frames.shape.as_list()[-1], self.block_frames
    batch, max_frames = tf.shape(frames)[0], tf.shape(frames)[1]
    blocks = (max_frames + size - 1) // size                                     # ceil(M / L)
    padding = blocks * size - max_frames
    frames = tf.pad(frames, [[0, 0], [0, padding], [0, 0]])                      # [B, blocks·L, D]
    mask = tf.pad(mask, [[0, 0], [0, padding]])
    block_frames = tf.reshape(frames, [batch * blocks, size, depth])             # [B·blocks, L, D]
    block_mask = tf.reshape(mask, [batch * blocks, size])                        # [B·blocks, L]
    block_vectors = layers.lstm(block_frames, block_mask, self.cells, self.num_layers, "lower_lstm",
                                self.representation)                             # [B·blocks, S]
    block_vectors = tf.reshape(block_vectors, [batch, blocks, self.level_size()])  # [B, blocks, S]
    non_empty = tf.reduce_max(tf.reshape(mask, [batch, blocks, size]), axis=2)  # [B, blocks]
    representation = layers.lstm(block_vectors, non_empty, self.cells, self.num_layers, "upper_lstm",
                                 self.representation)                            # [B, S]
    return self._classify(representation, vocab_size, is_training)

  def macs(self, frames, vocab_size):
    """Multiply-adds per video reading `frames` frames: the LSTM matmuls over the ceil(F/L)·L frame
    steps and ceil(F/L) block steps the graph runs, and the classifier."""
    blocks = -(-frames // self.block_frames)
    depth = sum(self.feature_sizes)
    return (blocks * self.block_frames * layers.lstm_macs(depth, self.cells, self.num_layers)
            + blocks * layers.lstm_macs(self.level_size(), self.cells, self.num_layers)
            + self.classifier.macs(self.level_size(), vocab_size))

