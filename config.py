"""Every flag that two programs share, defined once, and `model_flags.json`: what rebuilds a run's graph.

The flag names are the YouTube-8M starter code's and the seed's, so their command lines run as written.
Each program imports this module and defines only the flags no other program has; absl refuses a
second definition of a name (DuplicateFlagError at import), so a flag cannot be redefined with
another default or type. Values are checked by absl when the command line is parsed: enums
(case-insensitive), integer bounds and the validators below. A bad value is one `error: ...` line
(exit status 2) before anything is built or written.
"""

import math
import os

import tensorflow.compat.v1 as tf

import frame_level_models
import hrnn
import layers
import losses
import precision
import readers
import utils
import video_level_models
from utils import InputError

flags = tf.flags
FLAGS = flags.FLAGS

MODEL_FLAGS_FILE = "model_flags.json"
DEFAULT_K_FRAME = 300  # --k_frame's default; a teacher at this value reads all --max_frames frames
MODEL_TYPES = ("teacher", "student", "kd")
GRADIENT_CLIPPING = ("per_variable", "global")
# Everything needed to rebuild a run's model and input; written at training start, checked on resume.
MODEL_FLAG_NAMES = (
    "model_type", "model", "frame_features", "feature_names", "feature_sizes", "num_classes",
    "max_frames", "k_frame", "frame_sampling", "video_level_classifier_model", "groups",
    "nextvlad_cluster_size", "nextvlad_hidden_size", "expansion", "gating_reduction", "drop_rate",
    "l2_penalty", "moe_num_mixtures", "moe_prob_gating", "input_preprocessing", "eigenvals_path", "label_loss",
    "weight_init", "batchnorm_decay", "bn_mask_padding", "batchnorm_variance", "gradient_clipping",
    "kd_regularization", "kd_teacher_is_training", "mix_number", "cl_temperature", "cl_lambda",
    "hrnn_block_frames", "hrnn_student_block_frames", "hrnn_cells", "hrnn_layers", "hrnn_representation",
    "netvlad_cluster_size", "netvlad_hidden_size", "gating", "lightvlad", "lstm_cells", "lstm_layers",
    "iterations", "dbof_cluster_size", "dbof_hidden_size", "dbof_pooling_method", "dbof_add_batch_norm",
    "rep_projection", "k_frame_choices")
# Values the code had before a flag existed: a model_flags.json written then lacks the key and is
# rebuilt (and resumed) the way it was trained.
LEGACY_MODEL_FLAGS = {"weight_init": "glorot", "batchnorm_decay": 0.99, "bn_mask_padding": True,
                      "gradient_clipping": "global", "kd_regularization": True,
                      "kd_teacher_is_training": False, "mix_number": 3, "cl_temperature": 2.0,
                      "cl_lambda": 1.0, "batchnorm_variance": "biased", "hrnn_block_frames": 15,
                      "hrnn_student_block_frames": 6, "hrnn_cells": 1024, "hrnn_layers": 2,
                      "hrnn_representation": "state", "netvlad_cluster_size": 256,
                      "netvlad_hidden_size": 1024, "gating": True, "lightvlad": False, "lstm_cells": 1024,
                      "lstm_layers": 2, "iterations": 30, "dbof_cluster_size": 8192, "dbof_hidden_size": 1024,
                      "dbof_pooling_method": "max", "dbof_add_batch_norm": True, "rep_projection": False,
                      "moe_prob_gating": False, "k_frame_choices": [], "mixed_precision": "none"}
# Recorded in model_flags.json beside the model flags, not one of them: the precision the run's latest
# training session ran in (precision.resolve). The graph and the checkpoint are the same in every
# precision, so it is neither compared on resume nor imposed on eval and inference (their own
# --mixed_precision decides).


def _finite(value):
  return value is not None and math.isfinite(value)


def define_float(name, default, help_text, check, expected):
  """A float flag whose value must be finite and satisfy `check` (absl validator, message `expected`)."""
  flags.DEFINE_float(name, default, help_text)
  flags.register_validator(name, lambda value: _finite(value) and check(value),
                           message="expected " + expected)


def _enum(name, default, values, help_text):
  flags.DEFINE_enum(name, default, list(values), help_text, case_sensitive=False)


# -- input ------------------------------------------------------------------------------------------------
flags.DEFINE_string("feature_names", "rgb,audio", "Comma-separated feature names.")
flags.DEFINE_string("feature_sizes", "1024,128", "Comma-separated feature sizes.")
flags.DEFINE_bool("frame_features", True,
                  "True: frame-level SequenceExample shards; False: video-level Example shards.")
flags.DEFINE_integer("num_classes", 3862, "Number of classes (2018: 3862, 2017: 4716).", lower_bound=1)
flags.DEFINE_integer("max_frames", 300, "Frames kept per video (the first ones).", lower_bound=1)
flags.DEFINE_integer("num_readers", 8, "Shards read in parallel.", lower_bound=1)
flags.DEFINE_integer("batch_size", 80, "Videos per batch (per tower when training).", lower_bound=1)

# -- the model and its role -----------------------------------------------------------------------------
_enum("model_type", "teacher", MODEL_TYPES,
      "teacher (all frames), student (k frames) or kd (student distilled from a teacher); "
      "case-insensitive.")
flags.DEFINE_string("model", "NeXtVLADModel", "Model class name (model_utils.MODELS).")
flags.DEFINE_integer("k_frame", DEFAULT_K_FRAME,
                     "Frames a student reads (a teacher reads all unless k_frame < max_frames).",
                     lower_bound=1)
_enum("frame_sampling", "strided", readers.FRAME_SAMPLING_METHODS,
      "How a student picks its k frames: strided (the seed's positions 0:max_frames:max_frames//k "
      "of the padded window), uniform (k spread over the video's own frames, the paper's "
      "uniform-k), random, first, middle, last, first_middle_last.")
_enum("video_level_classifier_model", "LogisticModel", sorted(video_level_models.CLASSIFIERS),
      "Classifier on top of the frame model.")
flags.DEFINE_integer("groups", 8, "NeXtVLAD groups G.", lower_bound=1)
flags.DEFINE_integer("nextvlad_cluster_size", 128, "NeXtVLAD clusters K.", lower_bound=1)
flags.DEFINE_integer("nextvlad_hidden_size", 2048, "Hidden (representation) size H.", lower_bound=1)
flags.DEFINE_integer("expansion", 2, "NeXtVLAD expansion factor.", lower_bound=1)
flags.DEFINE_integer("gating_reduction", 8, "Context gating reduction r.", lower_bound=1)
define_float("drop_rate", 0.5, "Dropout rate before the hidden layer.", lambda v: 0 <= v < 1,
             "a rate in [0, 1)")
define_float("l2_penalty", 1e-5, "L2 penalty of the classifier weights.", lambda v: v >= 0, "0 or more")
flags.DEFINE_integer("moe_num_mixtures", 2, "Experts of MoeModel.", lower_bound=1)
flags.DEFINE_bool("moe_prob_gating", False, "MoeModel: gate its class probabilities by their own context, "
                  "p * sigmoid(BN(p W)) (WILLOW's probability gating; video_level_models.MoeModel).")
_enum("input_preprocessing", "default", ("default",) + frame_level_models.PREPROCESSING,
      "default (the model's own: whiten for the NeXtVLAD models and FrameLevelLogisticModel, l2 for "
      "the others; model_flags.json records the value it stands for), whiten (the seed's NeXtVLAD "
      "reverse whitening of rgb), l2 (per-frame L2 normalisation of rgb‖audio, the starter's, WILLOW's "
      "and the paper's code's) or none.")
flags.DEFINE_string("eigenvals_path", "",
                    "eigenvals.npy for --input_preprocessing=whiten (default: the bundled yt8m_pca copy).")
_enum("weight_init", "slim", layers.WEIGHT_INITS,
      "Weight initialiser: slim (the seed's variance scaling: factor 2, fan-in, truncated normal) or "
      "glorot (Glorot uniform; cluster weights and centres N(0, 1/fan_in)).")
define_float("batchnorm_decay", 0.999,
             "Moving-average decay of the batch-norm statistics (slim's and the seed's 0.999).",
             lambda v: 0 <= v < 1, "a decay in [0, 1)")
flags.DEFINE_bool("bn_mask_padding", False,
                  "Leave padded frames out of the NeXtVLAD assignment batch norm's statistics (the seed "
                  "counts them).")
_enum("batchnorm_variance", "seed", layers.BATCHNORM_VARIANCE,
      "Batch variance the moving variance moves towards: seed (as the seed's slim layers: the fused "
      "ones, context gating and the mixture weights, use the unbiased n/(n-1) variance, the others "
      "the biased one) or biased (every layer the biased variance).")
flags.DEFINE_integer("mix_number", 3, "MixNeXtVladModel: NeXtVLAD branches mixed.", lower_bound=1)
define_float("cl_temperature", 2.0,
             "MixNeXtVladModel: softmax temperature of the branches' collaborative-learning KL.",
             lambda v: v > 0, "a positive temperature")
define_float("cl_lambda", 1.0, "MixNeXtVladModel: weight of that KL term (a regularisation loss).",
             lambda v: v >= 0, "0 (off) or more")
_enum("label_loss", "CrossEntropyLoss", sorted(losses.LOSSES), "Label loss class name.")
_enum("gradient_clipping", "per_variable", GRADIENT_CLIPPING,
      "per_variable: each variable's averaged gradient clipped to --clip_gradient_norm (the seed's); "
      "global: all gradients scaled together to that global norm.")
flags.DEFINE_bool("kd_regularization", False,
                  "Add the student's L2 penalty to the KD loss (the seed's KD loss has none).")
flags.DEFINE_bool("kd_teacher_is_training", False,
                  "Build the serial KD teacher in training mode like the seed (dropout, batch statistics, "
                  "its moving statistics updated during KD); default: inference mode, bitwise frozen.")


# The other families (docs/BACKGROUND.md, "Other model families"); names as in the code they come from.
flags.DEFINE_integer("hrnn_block_frames", 15,
                     "HierarchicalRnnModel: frames per lower-LSTM block of a teacher (paper 20, its code 15).",
                     lower_bound=1)
flags.DEFINE_integer("hrnn_student_block_frames", 6,
                     "HierarchicalRnnModel: frames per block of a student or KD student (paper 5 or 3, its "
                     "code 6).", lower_bound=1)
flags.DEFINE_integer("hrnn_cells", 1024, "HierarchicalRnnModel: LSTM cells per layer, both levels.",
                     lower_bound=1)
flags.DEFINE_integer("hrnn_layers", 2, "HierarchicalRnnModel: LSTM layers per level.", lower_bound=1)
_enum("hrnn_representation", "state", hrnn.REPRESENTATIONS,
      "HierarchicalRnnModel: what each level emits and E is: state (every layer's final c and h, the "
      "paper's code) or h (the top layer's final h, the paper's text).")
flags.DEFINE_integer("netvlad_cluster_size", 256, "NetVLADModelLF: clusters K (audio K/2).", lower_bound=2)
flags.DEFINE_integer("netvlad_hidden_size", 1024, "NetVLADModelLF: hidden (representation) size H.",
                     lower_bound=1)
flags.DEFINE_bool("gating", True, "NetVLADModelLF: context gating of the hidden vector.")
flags.DEFINE_bool("lightvlad", False, "NetVLADModelLF: LightVLAD (no cluster centres subtracted).")
flags.DEFINE_integer("lstm_cells", 1024, "LstmModel: LSTM cells per layer.", lower_bound=1)
flags.DEFINE_integer("lstm_layers", 2, "LstmModel: LSTM layers.", lower_bound=1)
flags.DEFINE_integer("iterations", 30,
                     "DbofModel: frames drawn per video from its valid ones with replacement (random in "
                     "training, fixed positions otherwise); 0: every frame read.", lower_bound=0)
flags.DEFINE_integer("dbof_cluster_size", 8192, "DbofModel: units of the cluster layer.", lower_bound=1)
flags.DEFINE_integer("dbof_hidden_size", 1024, "DbofModel: units of the hidden layer (the representation).",
                     lower_bound=1)
_enum("dbof_pooling_method", "max", frame_level_models.DBOF_POOLING,
      "DbofModel: pooling over frames of the cluster layer.")
flags.DEFINE_bool("dbof_add_batch_norm", True, "DbofModel: batch norms (input, cluster, hidden) instead of "
                  "biases.")
flags.DEFINE_bool("rep_projection", False,
                  "KD: L_rep compares the teacher's representation with a learned linear map (student "
                  "scope rep_projection/, trained, not used at inference) of the student's, so that "
                  "students and teachers of other families or sizes can be distilled with L_rep.")


flags.DEFINE_list("k_frame_choices", [],
                  "Any-k student: comma-separated frame counts (e.g. 6,10,15,20,30); each training batch "
                  "reads k frames, k drawn from them, by --frame_sampling. Eval, inference and export read "
                  "--k_frame (default: the largest choice). Empty: every batch reads --k_frame.")
EXIT_RULES = ("none", "max_prob", "prediction_change", "gate")
_enum("exit_rule", "none", EXIT_RULES,
      "Early exit (eval, inference, export): the student reads its frames in stages (--exit_stages) "
      "and stops at the first stage where max_prob (top-class probability >= --exit_threshold), "
      "prediction_change (max abs change of the probabilities since the previous stage <= "
      "--exit_threshold) or gate (the learned exit gate of early_exit.py >= --exit_threshold) holds; "
      "none: every stage is read (with --exit_stages) or no stages at all.")
define_float("exit_threshold", 0.5, "Threshold of --exit_rule (a probability or a change, in [0, 1]).",
             lambda v: 0 <= v <= 1, "a threshold in [0, 1]")
flags.DEFINE_list("exit_stages", [],
                  "Early exit: cumulative frames read after each stage, increasing (e.g. 6,10,15,20,30); "
                  "default: the run's --k_frame_choices.")


def int_list(values, flag_name):
  """A list flag's values as ints: increasing frame counts of at least 1; InputError naming the flag."""
  try:
    numbers = [int(v) for v in values]
  except (TypeError, ValueError):
    numbers = None
  if numbers is None or any(n < 1 for n in numbers) or numbers != sorted(set(numbers)):
    raise InputError("--%s=%s: expected increasing frame counts of at least 1, comma-separated"
                     % (flag_name, ",".join(map(str, values))))
  return numbers


def _increasing_counts(values):
  try:
    int_list(values, "")
  except InputError:
    return False
  return True


for _name in ("k_frame_choices", "exit_stages"):
  flags.register_validator(_name, _increasing_counts,
                           message="expected increasing frame counts of at least 1, comma-separated")


@flags.multi_flags_validator(["k_frame_choices", "max_frames", "model_type", "frame_features"])
def _k_frame_choices_fit(values):
  choices = [int(v) for v in values["k_frame_choices"]]
  if not choices:
    return True
  if values["model_type"] == "teacher" or not values["frame_features"]:
    raise flags.ValidationError("--k_frame_choices: expected a frame-level student or kd run "
                                "(--model_type=student or kd, --frame_features)")
  if choices[-1] > values["max_frames"]:
    raise flags.ValidationError("--k_frame_choices=%s: expected at most --max_frames=%d"
                                % (",".join(map(str, choices)), values["max_frames"]))
  return True


@flags.multi_flags_validator(["k_frame", "max_frames", "model_type", "frame_features", "k_frame_choices"])
def _k_frame_fits(values):
  """A student reads at most the frames kept per video; a teacher's default reads all of them (an any-k
  student's default, its largest choice)."""
  k, max_frames = values["k_frame"], values["max_frames"]
  if values["frame_features"] and k > max_frames and not (
      (values["model_type"] == "teacher" or values["k_frame_choices"]) and k == DEFAULT_K_FRAME):
    raise flags.ValidationError("--k_frame=%d: expected at most --max_frames=%d (the frames kept per "
                                "video); a teacher reads all of them by default" % (k, max_frames))
  return True


# -- runs and files -------------------------------------------------------------------------------------
flags.DEFINE_string("train_dir", "/tmp/yt8m_model/",
                    "The run: checkpoints, model_flags.json, summaries (train.py writes it; eval.py, "
                    "inference.py and export_model.py read it).")
flags.DEFINE_string("checkpoint_file", "", "A checkpoint of --train_dir (default: the latest).")
flags.DEFINE_string("teacher_checkpoint", "", "Teacher checkpoint or teacher train_dir.")
flags.DEFINE_string("teacher_cache", "",
                    "Serial kd: read the teacher's outputs from this cache_teacher.py directory instead "
                    "of running the teacher (--teacher_checkpoint, if given, must be the cached one); "
                    "early_exit.py: the teacher agreement targets of the exit gate.")
flags.DEFINE_string("input_data_pattern", "", "Glob(s) of the shards to read, comma-separated.")
flags.DEFINE_string("output_dir", "", "The new train_dir a program writes (import_checkpoint.py, precise_bn.py).")
flags.DEFINE_integer("precise_bn_batches", 0,
                     "Recompute a frozen teacher's batch-norm statistics from this many training batches "
                     "before it is used (precise_bn.py; train.py --model_type=kd, cache_teacher.py); 0: "
                     "use its moving averages as trained.", lower_bound=0)
_enum("mixed_precision", "none", precision.MODES,
      "none (float32, the seed's), bfloat16 (grappler's oneDNN rewrite of the CPU ops) or float16 "
      "(grappler's rewrite of the GPU ops; training scales its loss dynamically): the matmuls and the "
      "ops between them in 16 bits, variables, optimizer slots, losses and metrics float32 "
      "(precision.py). Without the hardware (a CPU without AVX512-BF16/AMX-BF16, no GPU) one warning "
      "line, then float32. train.py, eval.py, inference.py, cache_teacher.py.")
flags.DEFINE_integer("top_k", 20, "Classes per video kept (GAP/mAP in eval, the CSV, the export).",
                     lower_bound=1)


def model_flags_from(values):
  """The MODEL_FLAG_NAMES subset of a flag dict, normalised (lower-case role, parsed feature lists)."""
  result = {name: values[name] for name in MODEL_FLAG_NAMES}
  result["model_type"] = str(result["model_type"]).lower()
  names, sizes = utils.get_list_of_feature_names_and_sizes(values["feature_names"],
                                                           values["feature_sizes"])
  result["feature_names"], result["feature_sizes"] = names, sizes
  result["k_frame_choices"] = int_list(result["k_frame_choices"], "k_frame_choices")
  if result["k_frame_choices"] and result["k_frame"] == DEFAULT_K_FRAME:
    result["k_frame"] = result["k_frame_choices"][-1]   # an any-k run is evaluated at its largest k
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
  file if it is missing or is not the JSON object train.py writes."""
  path = os.path.join(train_dir, MODEL_FLAGS_FILE)
  if not tf.io.gfile.exists(path):
    raise InputError("%s not found: expected a train_dir written by train.py" % path)
  recorded = utils.read_json(path, "the model flags train.py writes")
  missing = [name for name in ("model_type", "model", "num_classes") if name not in recorded]
  if missing:
    raise InputError("%s lacks %s: expected the model flags train.py writes" % (path, ", ".join(missing)))
  return with_legacy_flags(recorded)


def with_legacy_flags(recorded):
  """Model flags recorded by earlier code (model_flags.json, a cache manifest), with the value the code
  had before each flag existed for the keys they lack."""
  return dict(LEGACY_MODEL_FLAGS, **recorded)


def check_passed_flags(model_flags, flag_values, train_dir):
  """eval/inference/export take the starter's and the seed's model flags on their command line, as
  their scripts pass them: a flag given explicitly must agree with the run's model_flags.json (one
  InputError naming both values otherwise); flags that the run did not record are accepted."""
  conflicts = []
  for name in MODEL_FLAG_NAMES:
    if not flag_values[name].present or name not in model_flags:
      continue
    given, recorded = flag_values[name].value, model_flags[name]
    if name in ("feature_names", "feature_sizes"):
      given = utils.get_list_of_feature_names_and_sizes(
          flag_values["feature_names"].value, flag_values["feature_sizes"].value)[
              0 if name == "feature_names" else 1]
    if name == "k_frame_choices":
      given = int_list(given, name)
    if given != recorded and not (isinstance(recorded, float) and given == float(recorded)):
      conflicts.append("--%s=%s but %s was trained with %s" % (name, flag_values[name].value,
                                                            train_dir, recorded))
  if conflicts:
    raise InputError("; ".join(conflicts) + " (drop the flag or pass the trained value)")


def run_model_flags(train_dir, flag_values):
  """The model flags eval, inference and export rebuild a run with: its model_flags.json, checked
  against the model flags given on the command line (check_passed_flags). An any-k run
  (--k_frame_choices) reads the --k_frame frames given, if any, instead of its default (the largest
  choice)."""
  model_flags = load_model_flags(train_dir)
  if not (model_flags["k_frame_choices"] and flag_values["k_frame"].present):
    check_passed_flags(model_flags, flag_values, train_dir)
    return model_flags
  k = flag_values["k_frame"].value
  if k > model_flags["max_frames"]:
    raise InputError("--k_frame=%d: expected at most the run's --max_frames=%d" % (k, model_flags["max_frames"]))
  model_flags = dict(model_flags, k_frame=k)
  check_passed_flags(model_flags, flag_values, train_dir)
  return model_flags


def check_model_flags(train_dir, model_flags):
  """On resume: the flags must rebuild the same graph as the one checkpointed in train_dir."""
  saved = load_model_flags(train_dir)
  changed = ["--%s=%s (checkpoint has %s)" % (name, model_flags[name], saved.get(name))
             for name in MODEL_FLAG_NAMES if saved.get(name) != model_flags[name]]
  if changed:
    raise InputError("%s holds a model built with other flags: %s; pass the same flags, or "
                     "--start_new_model with a new --train_dir" % (train_dir, "; ".join(changed)))
