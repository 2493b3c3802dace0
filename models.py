"""The contract every model follows. The table of models by flag name is model_utils.MODELS (where
models are built); the model files import this module and nothing imports them back from here."""


class BaseModel(object):
  """Every model takes its hyperparameters as constructor keyword arguments (unknown ones are
  ignored, so a dict of all model flags can be passed) and builds its graph with

    create_model(model_input, num_frames, vocab_size, is_training, **unused_params) -> dict

  holding `predictions` (sigmoid probabilities [B, vocab]), `logits` [B, vocab] and
  `representation` (the video vector the distillation loss L_rep compares). `is_training` is a
  Python bool (dropout, batch statistics and their update ops only when True)."""
