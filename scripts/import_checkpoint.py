"""Imports a checkpoint written by the seed's code (zhongzhh8) or linrongc's (youtube-8m) into a
train_dir of this code: a model.ckpt-STEP under this code's variable names plus model_flags.json, which
eval.py, inference.py and train.py --teacher_checkpoint accept.

  python scripts/import_checkpoint.py --checkpoint=nextvlad_..._teacher/model.ckpt-95830 \\
      --output_dir=imported_teacher [architecture flags: --groups=8 --nextvlad_cluster_size=128 ...]

Where the model sits in the checkpoint is detected: `teacher/tower/` (the seed's teacher, or a KD run's
teacher), `student/tower/` (the seed's KD student: imported as --model_type=student, pass its --k_frame)
or `tower/` (linrongc's and the starter's train.py); --prefix chooses when several are present. The
model is NeXtVLADModel, or MixNeXtVladModel with --mix_number branches when the checkpoint has
`mix_weights`; the other architecture flags default to the seed's (pass the ones the run was trained
with). The global step is `<role>/global_step` (the seed's) or `global_step`. Optimizer slots are not
imported, so the result is for evaluation, inference and distillation, not for resuming training.

The seed's names, under the prefix (slim.fully_connected without a scope names itself fully_connected,
fully_connected_1, ... in its variable scope; in a Mix model each branch is in branch_<n>/ and its
NeXtVLAD scopes are lower-case video_vlad/, audio_vlad/):
  video_VLAD/fully_connected/{weights,biases}     -> video_VLAD/expansion/...
  video_VLAD/fully_connected_1/{weights,biases}   -> video_VLAD/group_attention/...
  video_VLAD/cluster_weights                      -> video_VLAD/cluster_assignment/weights
  video_VLAD/cluster_bn/{beta,gamma,moving_*}     -> video_VLAD/assignment_bn/...
  video_VLAD/cluster_weights2                     -> video_VLAD/cluster_centres
  video_VLAD/vlad_bn/...                          -> video_VLAD/vlad_bn/...     (audio_VLAD alike)
  hidden1_weights, hidden1_bn/...                 -> hidden/weights, hidden_bn/...
  gating_weights_1, gating_bn/..., gating_weights_2 -> gating/squeeze/weights, gating/squeeze_bn/...,
                                                     gating/excite/weights
  fully_connected/{weights,biases} (LogisticModel) -> classifier/logistic/...
  gates/weights, experts/{weights,biases} (MoeModel) -> classifier/gates/..., classifier/experts/...
  mix_weights_bn/..., mix_weights/{weights,biases} -> the same names
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tensorflow.compat.v1 as tf  # noqa: E402

import checkpoints  # noqa: E402
import config  # noqa: E402
import model_utils  # noqa: E402
import utils  # noqa: E402
from utils import InputError  # noqa: E402

flags = tf.flags

# The architecture flags are config.py's (their defaults: the seed's); pass the ones the run used.
# --output_dir (the new train_dir) is config.py's too.
flags.DEFINE_string("checkpoint", "", "The seed's or linrongc's checkpoint (prefix or its directory).")
flags.DEFINE_string("prefix", "",
                    "Scope of the model in the checkpoint: teacher/tower/, student/tower/ or tower/ "
                    "(default: the one present).")

PREFIXES = ("teacher/tower/", "student/tower/", "tower/")
# Our name under the model scope (first matching key, whole path components) -> the seed's.
VLAD_NAMES = (("expansion", "fully_connected"), ("group_attention", "fully_connected_1"),
              ("cluster_assignment/weights", "cluster_weights"), ("assignment_bn", "cluster_bn"),
              ("cluster_centres", "cluster_weights2"))
HEAD_NAMES = (("hidden/weights", "hidden1_weights"), ("hidden_bn", "hidden1_bn"),
              ("gating/squeeze/weights", "gating_weights_1"), ("gating/squeeze_bn", "gating_bn"),
              ("gating/excite/weights", "gating_weights_2"), ("classifier/logistic", "fully_connected"),
              ("classifier/gates", "gates"), ("classifier/experts", "experts"))


def seed_name(name):
  """This code's variable name under the model scope -> the seed's (linrongc's) under its prefix."""
  branch, rest = re.match(r"(branch_\d+/)?(.*)", name).groups()
  vlad = re.match(r"(video|audio)_VLAD/(.*)", rest)
  scope, renames = "", HEAD_NAMES
  if vlad:
    scope = "%s_vlad/" % vlad.group(1) if branch else "%s_VLAD/" % vlad.group(1)
    rest, renames = vlad.group(2), VLAD_NAMES
  for ours, theirs in renames:
    if rest == ours or rest.startswith(ours + "/"):
      rest = theirs + rest[len(ours):]
      break
  return (branch or "") + scope + rest


def detect_prefix(names, prefix, checkpoint):
  """The model's scope in the checkpoint: `prefix` if given, else the one of PREFIXES present."""
  found = [p for p in PREFIXES if any(n.startswith(p) and n.endswith("hidden1_weights") for n in names)]
  if prefix:
    prefix = prefix.rstrip("/") + "/"
    if prefix not in found:
      raise InputError("--prefix=%s: the checkpoint has no NeXtVLAD model there (found: %s)"
                       % (prefix, ", ".join(found) or "none"))
    return prefix
  if len(found) != 1:
    raise InputError("--checkpoint=%s: %s; expected one of %s (a hidden1_weights variable under it)%s"
                     % (checkpoint, "models under %s" % ", ".join(found) if found else
                        "no seed or linrongc NeXtVLAD model found", ", ".join(PREFIXES),
                        "; choose one with --prefix" if found else ""))
  return found[0]


def import_model_flags(names, prefix, flag_values):
  """model_flags for the imported run: the architecture flags, the model class and mix_number found in
  the checkpoint unless given, and the role (a student for the seed's student/tower/)."""
  values = {name: flag_values[name].value for name in config.MODEL_FLAG_NAMES}
  branches = {m.group(1) for m in (re.match(prefix + r"(branch_\d+)/", n) for n in names) if m}
  mixture = prefix + "mix_weights/weights" in names
  if not flag_values["model"].present:
    values["model"] = "MixNeXtVladModel" if mixture else "NeXtVLADModel"
  if mixture and not flag_values["mix_number"].present:
    values["mix_number"] = len(branches)
  if prefix == "student/tower/" and not flag_values["model_type"].present:
    values["model_type"] = "student"
  model_flags = model_utils.model_flags_from(values)
  if model_flags["model_type"] != "teacher" and model_flags["k_frame"] >= model_flags["max_frames"]:
    raise InputError("%s is a student: pass the --k_frame it was trained with (below --max_frames=%d)"
                     % (prefix, model_flags["max_frames"]))
  return model_flags


def import_checkpoint(checkpoint, output_dir, model_flags, prefix):
  """Writes output_dir/model.ckpt-STEP (this code's names) and model_flags.json; returns the path."""
  names = dict(tf.train.list_variables(checkpoint))
  scope = config.role_scope(model_flags)
  graph = tf.Graph()
  with graph.as_default():
    frames = tf.placeholder(tf.float32, [None, None, sum(model_flags["feature_sizes"])])
    model_utils.build_model(model_flags, frames, tf.placeholder(tf.int32, [None]), is_training=False)
    global_step = tf.train.get_or_create_global_step()
    variables = model_utils.scope_variables(scope)
    loader = tf.train.Saver(model_utils.restore_map(checkpoint, prefix.rstrip("/"), variables, scope,
                                                    "--checkpoint", rename=seed_name))
    saver = tf.train.Saver(variables + [global_step])
    step_names = [n for n in (prefix.split("/")[0] + "/global_step", "global_step") if n in names]
    with tf.Session() as sess:
      loader.restore(sess, checkpoint)
      step = int(tf.train.load_checkpoint(checkpoint).get_tensor(step_names[0])) if step_names else 0
      global_step.load(step, sess)
      path = saver.save(sess, os.path.join(output_dir, "model.ckpt"), global_step=step,
                        write_meta_graph=False)
  config.write_model_flags(output_dir, model_flags)
  return path


def run(opts):
  """Imports --checkpoint (exactly the one named, or a directory's latest, read back whole: a damaged
  one is refused) into --output_dir; returns the new checkpoint's path."""
  if not opts.checkpoint or not opts.output_dir:
    raise InputError("--checkpoint and --output_dir are required")
  checkpoint = checkpoints.choose(opts.checkpoint, "--checkpoint", fallback=False)
  if tf.io.gfile.exists(os.path.join(opts.output_dir, config.MODEL_FLAGS_FILE)) or (
      tf.io.gfile.isdir(opts.output_dir) and tf.train.latest_checkpoint(opts.output_dir)):
    raise InputError("--output_dir=%s already holds a run; choose a new directory (nothing is "
                     "overwritten)" % opts.output_dir)
  names = dict(tf.train.list_variables(checkpoint))
  prefix = detect_prefix(names, opts.prefix, opts.checkpoint)
  model_flags = import_model_flags(names, prefix, opts)
  path = import_checkpoint(checkpoint, opts.output_dir, model_flags, prefix)
  tf.logging.info("Imported %s (%s%s) to %s.", checkpoint, prefix, model_flags["model"], path)
  return path


main = utils.flag_program(run)

if __name__ == "__main__":
  utils.run_cli(main, sys.argv)
