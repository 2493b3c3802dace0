"""BaseModel contract and the registry that builds models by their flag name."""

from utils import InputError


class BaseModel(object):
  """Every model takes its hyperparameters as constructor keyword arguments (unknown ones are
  ignored, so a dict of all model flags can be passed) and builds its graph with

    create_model(model_input, num_frames, vocab_size, is_training, **unused_params) -> dict

  holding `predictions` (sigmoid probabilities [B, vocab]), `logits` [B, vocab] and
  `representation` (the video vector the distillation loss L_rep compares). `is_training` is a
  Python bool (dropout, batch statistics and their update ops only when True)."""


def _registry():
  # Imported here: the model modules import this one for BaseModel.
  import frame_level_models
  import nextvlad
  import video_level_models
  classes = (nextvlad.NeXtVLADModel, nextvlad.MixNeXtVladModel,
             frame_level_models.FrameLevelLogisticModel,
             video_level_models.LogisticModel, video_level_models.MoeModel)
  return {cls.__name__: cls for cls in classes}


def get_model(name, **hparams):
  """An instance of the model class registered under `name`, built with `hparams`."""
  registry = _registry()
  if name not in registry:
    raise InputError("--model=%r: unknown model, expected one of %s"
                     % (name, ", ".join(sorted(registry))))
  return registry[name](**hparams)
