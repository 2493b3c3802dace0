"""Flags shared by train/eval/inference/export, and `model_flags.json`: what rebuilds a run's graph.

The flag names are the YouTube-8M starter code's and the seed's, so their command lines run as written.
"""

import json
import os

import tensorflow.compat.v1 as tf

import utils
from utils import InputError

flags = tf.flags
FLAGS = flags.FLAGS

MODEL_FLAGS_FILE = "model_flags.json"
DEFAULT_K_FRAME = 300  # --k_frame's default; a teacher at this value reads all --max_frames frames
MODEL_TYPES = ("teacher", "student", "kd")
# Everything needed to rebuild a run's model and input; written at training start, checked on resume.
MODEL_FLAG_NAMES = (
    "model_type", "model", "frame_features", "feature_names", "feature_sizes", "num_classes",
    "max_frames", "k_frame", "frame_sampling", "video_level_classifier_model", "groups",
    "nextvlad_cluster_size", "nextvlad_hidden_size", "expansion", "gating_reduction", "drop_rate",
    "l2_penalty", "moe_num_mixtures", "input_preprocessing", "eigenvals_path", "label_loss",
    "weight_init", "batchnorm_decay", "bn_mask_padding", "gradient_clipping", "kd_regularization",
    "kd_teacher_is_training", "mix_number", "cl_temperature", "cl_lambda")
# Values the code had before a flag existed: a model_flags.json written then lacks the key and is
# rebuilt (and resumed) the way it was trained.
LEGACY_MODEL_FLAGS = {"weight_init": "glorot", "batchnorm_decay": 0.99, "bn_mask_padding": True,
                      "gradient_clipping": "global", "kd_regularization": True,
                      "kd_teacher_is_training": False, "mix_number": 3, "cl_temperature": 2.0,
                      "cl_lambda": 1.0}


def define_flag(define, name, *args, **kwargs):
  """Defines a flag unless a module imported earlier did (train, eval and inference share names)."""
  if name not in FLAGS:
    define(name, *args, **kwargs)


def define_data_flags():
  """Input flags (starter names)."""
  define_flag(flags.DEFINE_string, "feature_names", "rgb,audio", "Comma-separated feature names.")
  define_flag(flags.DEFINE_string, "feature_sizes", "1024,128", "Comma-separated feature sizes.")
  define_flag(flags.DEFINE_bool, "frame_features", True,
               "True: frame-level SequenceExample shards; False: video-level Example shards.")
  define_flag(flags.DEFINE_integer, "num_classes", 3862, "Number of classes (2018: 3862, 2017: 4716).")
  define_flag(flags.DEFINE_integer, "max_frames", 300, "Frames kept per video (the first ones).")
  define_flag(flags.DEFINE_integer, "num_readers", 8, "Shards read in parallel.")
  define_flag(flags.DEFINE_integer, "batch_size", 80, "Videos per batch (per tower when training).")


def define_model_flags():
  """Architecture and role flags (the seed's NeXtVLAD flags plus the distillation roles)."""
  define_data_flags()
  define_flag(flags.DEFINE_string, "model_type", "teacher",
               "teacher (all frames), student (k frames) or kd (student distilled from a teacher); "
               "case-insensitive.")
  define_flag(flags.DEFINE_string, "model", "NeXtVLADModel", "Model class name.")
  define_flag(flags.DEFINE_integer, "k_frame", DEFAULT_K_FRAME,
               "Frames a student reads (a teacher reads all unless k_frame < max_frames).")
  define_flag(flags.DEFINE_string, "frame_sampling", "strided",
               "How a student picks its k frames: strided (the seed's positions 0:max_frames:"
               "max_frames//k of the padded window), uniform (k spread over the video's own frames, "
               "the paper's uniform-k), random, first, middle, last, first_middle_last.")
  define_flag(flags.DEFINE_string, "video_level_classifier_model", "LogisticModel",
               "Classifier on top of the frame model: LogisticModel or MoeModel.")
  define_flag(flags.DEFINE_integer, "groups", 8, "NeXtVLAD groups G.")
  define_flag(flags.DEFINE_integer, "nextvlad_cluster_size", 128, "NeXtVLAD clusters K.")
  define_flag(flags.DEFINE_integer, "nextvlad_hidden_size", 2048, "Hidden (representation) size H.")
  define_flag(flags.DEFINE_integer, "expansion", 2, "NeXtVLAD expansion factor.")
  define_flag(flags.DEFINE_integer, "gating_reduction", 8, "Context gating reduction r.")
  define_flag(flags.DEFINE_float, "drop_rate", 0.5, "Dropout rate before the hidden layer.")
  define_flag(flags.DEFINE_float, "l2_penalty", 1e-5, "L2 penalty of the classifier weights.")
  define_flag(flags.DEFINE_integer, "moe_num_mixtures", 2, "Experts of MoeModel.")
  define_flag(flags.DEFINE_string, "input_preprocessing", "whiten",
               "whiten (the seed's NeXtVLAD reverse whitening of rgb), l2 (per-frame L2 "
               "normalisation, the starter's) or none.")
  define_flag(flags.DEFINE_string, "eigenvals_path", "",
               "eigenvals.npy for --input_preprocessing=whiten (default: the bundled yt8m_pca copy).")
  define_flag(flags.DEFINE_string, "weight_init", "slim",
               "Weight initialiser: slim (the seed's variance scaling: factor 2, fan-in, truncated "
               "normal) or glorot (Glorot uniform; cluster weights and centres N(0, 1/fan_in)).")
  define_flag(flags.DEFINE_float, "batchnorm_decay", 0.999,
               "Moving-average decay of the batch-norm statistics (slim's and the seed's 0.999).")
  define_flag(flags.DEFINE_bool, "bn_mask_padding", False,
               "Leave padded frames out of the NeXtVLAD assignment batch norm's statistics (the seed "
               "counts them).")
  define_flag(flags.DEFINE_integer, "mix_number", 3, "MixNeXtVladModel: NeXtVLAD branches mixed.")
  define_flag(flags.DEFINE_float, "cl_temperature", 2.0,
              "MixNeXtVladModel: softmax temperature of the branches' collaborative-learning KL.")
  define_flag(flags.DEFINE_float, "cl_lambda", 1.0,
              "MixNeXtVladModel: weight of that KL term (a regularisation loss).")
  define_flag(flags.DEFINE_string, "label_loss", "CrossEntropyLoss", "Label loss class name.")


def model_flags_from(values):
  """The MODEL_FLAG_NAMES subset of a flag dict, normalised (lower-case role, parsed feature lists)."""
  result = {name: values[name] for name in MODEL_FLAG_NAMES}
  result["model_type"] = str(result["model_type"]).lower()
  if result["model_type"] not in MODEL_TYPES:
    raise InputError("--model_type=%r: expected one of teacher, student, kd" % values["model_type"])
  names, sizes = utils.get_list_of_feature_names_and_sizes(values["feature_names"],
                                                           values["feature_sizes"])
  result["feature_names"], result["feature_sizes"] = names, sizes
  if result["frame_features"] and not 0 < result["k_frame"]:
    raise InputError("--k_frame=%s: expected a positive number of frames" % result["k_frame"])
  return result


def role_scope(model_flags):
  """Variable scope of the model a run trains: `teacher/` for teachers, `student/` otherwise."""
  return "teacher" if model_flags["model_type"] == "teacher" else "student"


def frames_read(model_flags):
  """k frames the run's model reads, or None for all frames (teachers and video-level data)."""
  if not model_flags["frame_features"]:
    return None
  if model_flags["model_type"] == "teacher" and model_flags["k_frame"] >= model_flags["max_frames"]:
    return None
  return min(model_flags["k_frame"], model_flags["max_frames"])


def write_model_flags(train_dir, model_flags):
  """Writes train_dir/model_flags.json atomically."""
  tf.io.gfile.makedirs(train_dir)
  utils.write_json_atomic(os.path.join(train_dir, MODEL_FLAGS_FILE), model_flags)


def load_model_flags(train_dir):
  """Reads train_dir/model_flags.json (keys it predates get LEGACY_MODEL_FLAGS); InputError naming the
  file if it is missing."""
  path = os.path.join(train_dir, MODEL_FLAGS_FILE)
  if not tf.io.gfile.exists(path):
    raise InputError("%s not found: expected a train_dir written by train.py" % path)
  with tf.io.gfile.GFile(path) as f:
    return dict(LEGACY_MODEL_FLAGS, **json.load(f))


def check_passed_flags(model_flags, flag_values, train_dir):
  """eval/inference/export take the starter's and the seed's model flags on their command line, as
  their scripts pass them: a flag given explicitly must agree with the run's model_flags.json (one
  InputError naming both values otherwise); flags that the run did not record are accepted."""
  conflicts = []
  for name in MODEL_FLAG_NAMES:
    if name not in flag_values or not flag_values[name].present or name not in model_flags:
      continue
    given, recorded = flag_values[name].value, model_flags[name]
    if name == "model_type":
      given = str(given).lower()
    elif name in ("feature_names", "feature_sizes"):
      given = utils.get_list_of_feature_names_and_sizes(
          flag_values["feature_names"].value, flag_values["feature_sizes"].value)[
              0 if name == "feature_names" else 1]
    if given != recorded and not (isinstance(recorded, float) and given == float(recorded)):
      conflicts.append("--%s=%s but %s was trained with %s" % (name, flag_values[name].value,
                                                            train_dir, recorded))
  if conflicts:
    raise InputError("; ".join(conflicts) + " (drop the flag or pass the trained value)")


def check_model_flags(train_dir, model_flags):
  """On resume: the flags must rebuild the same graph as the one checkpointed in train_dir."""
  saved = load_model_flags(train_dir)
  changed = ["--%s=%s (checkpoint has %s)" % (name, model_flags[name], saved.get(name))
             for name in MODEL_FLAG_NAMES if saved.get(name) != model_flags[name]]
  if changed:
    raise InputError("%s holds a model built with other flags: %s; pass the same flags, or "
                     "--start_new_model with a new --train_dir" % (train_dir, "; ".join(changed)))
