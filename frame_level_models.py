"""Frame-level baselines besides NeXtVLAD."""

import tensorflow.compat.v1 as tf

import models
import nextvlad
import video_level_models


class FrameLevelLogisticModel(models.BaseModel):
  """Masked mean of the (preprocessed) valid frames -> LogisticModel. Its representation is the mean
  frame; it has no batch norm and no dropout."""

  def create_model(self, model_input, num_frames, vocab_size, is_training, l2_penalty=1e-8,
                   **unused_params):
    frames = nextvlad.preprocess(model_input, **self.hparams)
    mask = tf.sequence_mask(num_frames, tf.shape(frames)[1], dtype=tf.float32)
    count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
    average = tf.reduce_sum(frames * mask[:, :, None], axis=1) / count
    return video_level_models.LogisticModel().create_model(average, vocab_size, l2_penalty=l2_penalty)
