"""BaseModel contract and the registry that builds models by their flag name."""

from utils import InputError


class BaseModel(object):
  """Every model: create_model(model_input, num_frames, vocab_size, is_training, **unused) returns a
  dict with `predictions` (sigmoid probabilities [B, vocab]), `logits` [B, vocab] and
  `representation` (the video vector L_rep compares). Hyperparameters come to the constructor as
  keyword arguments; unknown ones are ignored, so a dict of all model flags can be passed."""

  def __init__(self, **hparams):
    self.hparams = hparams


def get_model(name, **hparams):
  """An instance of the model class registered under `name` (e.g. NeXtVLADModel)."""
  import frame_level_models
  import nextvlad
  import video_level_models
  registry = {cls.__name__: cls for cls in (nextvlad.NeXtVLADModel, frame_level_models.FrameLevelLogisticModel,
                                            video_level_models.LogisticModel, video_level_models.MoeModel)}
  if name not in registry:
    raise InputError("--model=%r: expected one of %s" % (name, ", ".join(sorted(registry))))
  return registry[name](**hparams)
