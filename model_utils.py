"""Builds a run's input and model from its model flags (train_dir/model_flags.json), by role.

Train, eval, inference and export all go through here, so a checkpoint is always rebuilt with the
scope, the frames (k and sampling) and the architecture it was trained with.
"""

import os

import numpy as np
import tensorflow.compat.v1 as tf

import config
import frame_level_models
import hrnn
import layers
import losses
import netvlad
import nextvlad
import readers
import utils
import video_level_models
from utils import InputError

# Every model a run can name with --model: the one table from flag names to classes.
MODELS = {cls.__name__: cls for cls in (
    nextvlad.NeXtVLADModel, nextvlad.MixNeXtVladModel, hrnn.HierarchicalRnnModel, netvlad.NetVLADModelLF,
    frame_level_models.LstmModel, frame_level_models.DbofModel, frame_level_models.FrameLevelLogisticModel,
    video_level_models.LogisticModel, video_level_models.MoeModel)}


def _resolved(name, hparams):
  """hparams with --input_preprocessing=default replaced by the model's own (DEFAULT_PREPROCESSING;
  none for the video-level models, which read no frames)."""
  if hparams.get("input_preprocessing") != "default":
    return hparams
  model = utils.lookup(MODELS, name, "model")
  return dict(hparams, input_preprocessing=getattr(model, "DEFAULT_PREPROCESSING", "none"))


def get_model(name, **hparams):
  """An instance of the model class registered under `name` (--model), built with `hparams`."""
  return utils.lookup(MODELS, name, "model")(**_resolved(name, hparams))


def model_flags_from(values):
  """What a run records in model_flags.json (config.model_flags_from), with the value that
  --input_preprocessing=default stands for: a default run and an older run that named that value
  rebuild, resume and compare alike."""
  model_flags = config.model_flags_from(values)
  return _resolved(model_flags["model"], model_flags)


def macs(model_flags, frames=None):
  """Multiply-adds per video of the run's model reading `frames` frames (None: all, max_frames),
  counted from its definition (each model's `macs`): the matrix products of its layers, recurrences
  and aggregations; the elementwise operations (batch norms, activations, normalisations) are not
  counted."""
  model = get_model(model_flags["model"], **model_flags)
  if not model_flags["frame_features"]:
    return model.macs(sum(model_flags["feature_sizes"]), model_flags["num_classes"])
  return model.macs(frames or model_flags["max_frames"], model_flags["num_classes"])


def make_reader(model_flags, also_full_frames=False, seed=None, nested_stages=None):
  """The reader for this run's model: all frames for a teacher, k sampled frames for a student (in
  training an any-k student's k is drawn per batch); with `nested_stages` (early exit) the last
  stage's uniform frames in readers.nested_order instead."""
  k, sampling = ((nested_stages[-1], readers.NESTED) if nested_stages else
                 (config.frames_read(model_flags), model_flags["frame_sampling"]))
  return readers.get_reader(
      model_flags["frame_features"], model_flags["num_classes"], model_flags["feature_names"],
      model_flags["feature_sizes"], model_flags["max_frames"], k, sampling, also_full_frames, seed,
      model_flags.get("k_frame_choices", ()), nested_stages or ())


def build_model(model_flags, model_input, num_frames, is_training, scope=None):
  """Creates (or reuses) the model in `scope` (default: the run's role scope); returns its output dict
  with `predictions`, `logits` and `representation`."""
  model = get_model(model_flags["model"], **model_flags)
  hparams = {k: v for k, v in model_flags.items() if k not in ("num_classes", "model")}
  with model_scope(model_flags, scope):
    return model.create_model(model_input=model_input, num_frames=num_frames,
                              vocab_size=model_flags["num_classes"], is_training=is_training,
                              **hparams)


def model_scope(model_flags, scope=None):
  """The variable scope a run's model is built (or reused) in: `scope` (default: the run's role
  scope), with the run's weight initialiser."""
  return tf.variable_scope(scope or config.role_scope(model_flags), reuse=tf.AUTO_REUSE,
                           initializer=layers.weight_initializer(model_flags.get("weight_init", "slim")))


def label_loss(model_flags):
  return losses.get_loss(model_flags["label_loss"])


def training_label_loss(loss_fn, outputs, labels):
  """The label loss of a model's predictions plus that of each of its `aux_predictions` (a mixture's
  branches, in training), which the seed's trainer adds to the label loss."""
  return tf.add_n([loss_fn.calculate_loss(predictions, labels)
                   for predictions in [outputs["predictions"]] + outputs.get("aux_predictions", [])])


def scope_variables(scope):
  """All global variables of a model scope (weights and batch-norm moving statistics)."""
  return [v for v in tf.global_variables() if v.op.name.startswith(scope + "/")]


def check_finite_predictions(predictions, video_ids, source):
  """InputError naming the checkpoint or SavedModel (`source`) if a prediction is NaN or infinite: a
  diverged model, whose scores would be meaningless."""
  bad = ~np.isfinite(np.asarray(predictions)).all(axis=-1)
  if bad.any():
    video = video_ids[int(np.argmax(bad))]
    raise InputError("%s gives non-finite predictions (%d of %d videos in a batch, first %s): the model "
                     "diverged; use an earlier checkpoint (--checkpoint_file)"
                     % (source, int(bad.sum()), len(bad),
                        video.decode("utf-8", "replace") if isinstance(video, bytes) else video))


def train_dir_of(checkpoint_path):
  return os.path.dirname(checkpoint_path)


def restore_map(checkpoint_path, checkpoint_scope, variables, graph_scope, flag_name, rename=None):
  """{name in checkpoint: variable} mapping `graph_scope/x` to `checkpoint_scope/x` (or to
  `checkpoint_scope/rename(x)`) for a checkpoint checkpoints.choose returned; raises one InputError
  listing every variable that is missing from the checkpoint or has another shape."""
  reader_shapes = dict(tf.train.list_variables(checkpoint_path))
  mapping, missing, mismatched = {}, [], []
  for var in variables:
    relative = var.op.name[len(graph_scope) + 1:]
    name = checkpoint_scope + "/" + (rename(relative) if rename else relative)
    shape = var.shape.as_list()
    if name not in reader_shapes:
      missing.append(name)
    elif list(reader_shapes[name]) != shape:
      mismatched.append("%s %s (graph needs %s)" % (name, list(reader_shapes[name]), shape))
    else:
      mapping[name] = var
  if missing or mismatched:
    raise InputError("%s=%s does not fit the model: %s%s" % (
        flag_name, checkpoint_path,
        "missing %s" % ", ".join(missing[:10]) + (" (+%d more)" % (len(missing) - 10) if len(missing) > 10 else "")
        if missing else "", ("; " if missing else "") + "shape mismatch " + ", ".join(mismatched[:10])
        if mismatched else ""))
  return mapping


def with_frame_counts(model_flags, outputs, num_frames):
  """A model's `outputs` with, per video, `frames_read` (its num_frames) and `macs` (int64: macs() of
  the run's k frames, or all: a fixed-k model spends the same on every video)."""
  spent = macs(model_flags, config.frames_read(model_flags))
  return dict(outputs, frames_read=num_frames,
              macs=tf.fill(tf.shape(num_frames), tf.constant(spent, tf.int64)))


def build_evaluation_graph(model_flags, files, batch_size, num_readers=4, staged=None):
  """Input pass (deterministic, every video once) + the run's model in inference mode + a Saver for
  its scope. Call inside a fresh graph; returns a dict with `batch`, `iterator_init`, `outputs`,
  `saver`, `restored` (the checkpoint names the saver reads: checkpoints.choose's `needed`),
  `global_step`, `reader` and `frame_bins` (frame counts bounding early_exit.FrameCount's histogram
  bins). `outputs` also hold per video `frames_read` (the frames the model consumed) and `macs` (the
  multiply-adds spent, int64). `staged` (an early_exit.Staged) reads its stages' frames and runs the
  model with early exit; its `outputs` then also hold `exit_stage`."""
  global_step = tf.train.get_or_create_global_step()
  reader = make_reader(model_flags) if staged is None else staged.reader()
  batch, iterator_init = reader.input_batch(files, batch_size, training=False, num_readers=num_readers)
  if staged is None:
    outputs = with_frame_counts(model_flags, build_model(model_flags, batch["video_matrix"],
                                                         batch["num_frames"], is_training=False),
                                batch["num_frames"])
    bins = [config.frames_read(model_flags) or model_flags["max_frames"]]
  else:
    outputs, bins = staged.outputs(batch["video_matrix"], batch["num_frames"]), staged.stages
  variables = scope_variables(config.role_scope(model_flags)) + [global_step]
  return {"batch": batch, "iterator_init": iterator_init, "outputs": outputs,
          "saver": tf.train.Saver(variables), "restored": [v.op.name for v in variables],
          "global_step": global_step, "reader": reader, "frame_bins": bins}
