"""One way to open a run's checkpoint: which one to restore, and whether its files can be read.

Every program that restores a checkpoint (train.py resuming, eval.py, inference.py, export_model.py,
the KD teacher and --student_init_from_teacher in kd_teacher.py, cache_teacher.py and
scripts/import_checkpoint.py) picks it with `choose`. A V2 checkpoint stores a CRC32C per tensor and
TensorFlow checks it on every read, so reading back each tensor a graph needs finds a truncated,
overwritten or missing file before a restore would fail with a traceback. Where the choice falls is
the program's decision, made here: in a train_dir, the newest intact checkpoint (the damaged newer
ones passed over with a warning), or, for a checkpoint that must be exactly the one named (a KD
teacher, a cache's teacher, an import), a refusal. A checkpoint named by its prefix is never replaced.
Training moves the damaged files it passed over aside (`set_aside`); nothing here deletes a file.
"""

import os

import tensorflow.compat.v1 as tf

import utils
from utils import InputError

DAMAGED_DIR = "damaged"   # in a train_dir: the files of the damaged checkpoints training passed over
# What reading a damaged checkpoint raises: OpError (DataLoss, a CRC mismatch; NotFound, a missing
# file), IndexError (OutOfRange, a truncated file, through TensorFlow's reader bindings), ValueError.
READ_ERRORS = (tf.errors.OpError, IndexError, ValueError)


def listed(train_dir):
  """The checkpoints train_dir's `checkpoint` index lists, oldest first (the newest last); [] without
  an index. InputError naming the index if it cannot be parsed (TensorFlow would ignore it, and a
  run would start anew over the old checkpoints' names)."""
  path = os.path.join(train_dir, "checkpoint")
  if not tf.io.gfile.exists(path):
    return []
  try:
    state = tf.train.get_checkpoint_state(train_dir)
  except ValueError:
    state = None
  if state is None:
    raise InputError("%s cannot be parsed: expected the checkpoint index the Saver writes "
                     "(model_checkpoint_path: \"model.ckpt-STEP\")" % path)
  paths = [p for p in state.all_model_checkpoint_paths if p != state.model_checkpoint_path]
  return paths + [state.model_checkpoint_path]


def damage(checkpoint, needed=None):
  """Why `checkpoint` (a model.ckpt-STEP prefix) cannot be restored, in a few words naming the file,
  or None when its index and every tensor of `needed` (a list of checkpoint names; None: all) read
  back intact. InputError, not damage, when the index lacks a name of `needed`: a checkpoint of
  another model."""
  if not tf.io.gfile.exists(checkpoint + ".index"):
    return "%s.index is missing" % checkpoint
  try:
    reader = tf.train.load_checkpoint(checkpoint)
  except READ_ERRORS as error:
    return "%s.index cannot be read (%s)" % (checkpoint, utils.error_line(error))
  names = reader.get_variable_to_shape_map()
  needed = sorted(names) if needed is None else needed
  missing = [name for name in needed if name not in names]
  if missing:
    raise InputError("%s does not fit the model: it lacks %s%s" % (
        checkpoint, ", ".join(missing[:5]), " (+%d more)" % (len(missing) - 5) if len(missing) > 5 else ""))
  for name in needed:
    try:
      reader.get_tensor(name)
    except READ_ERRORS as error:
      data = sorted(tf.io.gfile.glob(checkpoint + ".data-*"))
      return "%s cannot be read at tensor %s (%s)" % (data[0] if len(data) == 1 else checkpoint + ".data-*",
                                                     name, utils.error_line(error))
  return None


def newest_intact(train_dir, needed=None):
  """(the newest checkpoint train_dir lists whose `needed` tensors read back intact, or None;
  [(checkpoint, damage) of each newer one], newest first)."""
  passed = []
  for checkpoint in reversed(listed(train_dir)):
    reason = damage(checkpoint, needed)
    if reason is None:
      return checkpoint, passed
    passed.append((checkpoint, reason))
  return None, passed


def _describe(passed):
  return "; ".join("%s is damaged (%s)" % pair for pair in passed)


def choose(path, flag_name, needed=None, fallback=True):
  """The checkpoint to restore, from `path` given as `flag_name`: a model.ckpt-STEP prefix, restored as
  named, or a train_dir, whose index names its checkpoints. Every tensor of `needed` (checkpoint
  names; None: all) is read back first. A named prefix that is damaged is refused. In a train_dir the
  newest intact checkpoint is chosen, and one warning line names the damaged newer ones passed over;
  with fallback=False a damaged latest one is refused instead (a KD teacher, a cache's teacher, an
  import: exactly the one named, or none). InputError in one line for a refusal, a path holding no
  checkpoint, or a train_dir with nothing intact left; no file is changed. Logs what it chose."""
  if tf.io.gfile.isdir(path):
    paths = listed(path)
    if not paths:
      raise InputError("%s=%s holds no checkpoint (model.ckpt-*)" % (flag_name, path))
    if fallback:
      checkpoint, passed = newest_intact(path, needed)
      if checkpoint is None:
        raise InputError("%s=%s holds no intact checkpoint (its files are left as they are): %s"
                         % (flag_name, path, _describe(passed)))
      if passed:
        tf.logging.warning("%s; restoring %s, the newest intact checkpoint, instead.", _describe(passed),
                           checkpoint)
    else:
      checkpoint = paths[-1]
      reason = damage(checkpoint, needed)
      if reason is not None:
        raise InputError("%s=%s: its latest checkpoint %s cannot be read as a checkpoint: %s; it is not "
                         "replaced by an older one: pass an intact checkpoint (a model.ckpt-STEP prefix)"
                         % (flag_name, path, checkpoint, reason))
  else:
    checkpoint = path
    if not tf.io.gfile.exists(checkpoint + ".index"):
      raise InputError("%s=%s: no such checkpoint (expected a train_dir or a model.ckpt-STEP prefix)"
                       % (flag_name, path))
    reason = damage(checkpoint, needed)
    if reason is not None:
      raise InputError("%s=%s cannot be read as a checkpoint: %s; expected an intact checkpoint"
                       % (flag_name, path, reason))
  tf.logging.info("Checkpoint %s chosen (%s): %s read back intact.", checkpoint, flag_name,
                  "every tensor" if needed is None else "the %d tensors to restore" % len(needed))
  return checkpoint


def _free_prefix(folder, name):
  """folder/name, or folder/name.2, .3, ... : the first prefix no file in folder starts with."""
  prefix, number = os.path.join(folder, name), 1
  while tf.io.gfile.glob(prefix + ".*"):
    number += 1
    prefix = os.path.join(folder, "%s.%d" % (name, number))
  return prefix


def set_aside(train_dir, chosen):
  """Training resumes from `chosen` (choose's pick): the checkpoints the index lists after it, which
  choose passed over as damaged, are moved into train_dir/damaged/ under their names (model.ckpt-40.*,
  then model.ckpt-40.2.* if that is taken) and dropped from the index. Nothing is deleted, and neither
  a new checkpoint of the same step (the numbering continues from `chosen`) nor the Saver's retention
  (--keep_checkpoint_max) can overwrite or delete them."""
  paths = listed(train_dir)
  kept, passed = paths[:paths.index(chosen) + 1], paths[paths.index(chosen) + 1:]
  if not passed:
    return
  state = tf.train.get_checkpoint_state(train_dir)
  folder = os.path.join(train_dir, DAMAGED_DIR)
  for checkpoint in passed:
    files = tf.io.gfile.glob(checkpoint + ".*")
    if files:
      tf.io.gfile.makedirs(folder)
      target = _free_prefix(folder, os.path.basename(checkpoint))
      for name in files:
        tf.io.gfile.rename(name, target + name[len(checkpoint):], overwrite=False)
    tf.logging.info("Damaged checkpoint %s: %s and dropped from %s/checkpoint (nothing deleted).",
                    checkpoint, "its files moved to %s.*" % target if files else "no files left",
                    train_dir)
  timestamps = list(state.all_model_checkpoint_timestamps)
  tf.train.update_checkpoint_state(
      train_dir, os.path.relpath(chosen, train_dir), [os.path.relpath(p, train_dir) for p in kept],
      all_model_checkpoint_timestamps=(
          [t for p, t in zip(state.all_model_checkpoint_paths, timestamps) if p in kept]
          if len(timestamps) == len(state.all_model_checkpoint_paths) else None),
      last_preserved_timestamp=state.last_preserved_timestamp)
