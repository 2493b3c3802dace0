"""The teacher of a distillation run (--model_type=kd): which checkpoint and flags, live or cached, its
frozen graph in the towers, the savers that restore it, and its record in the student's train_dir.

Serial KD: a pre-trained teacher, frozen. Live, it is rebuilt from its own model_flags.json in scope
`teacher/` (inference mode unless --kd_teacher_is_training), its variables local (never checkpointed
with the student, never shared through parameter servers) and not trainable, restored from
--teacher_checkpoint after the session opens. Cached (--teacher_cache), no teacher graph is built: its
outputs are read beside the data (teacher_cache.py). Parallel KD: a teacher of the student's
architecture, reading all frames, trained on its own L_CE in the same run.
"""

import collections
import os

import tensorflow.compat.v1 as tf

import checkpoints
import config
import layers
import model_utils
import precise_bn
import teacher_cache
import utils
from utils import InputError

RECORD_FILE = "kd_teacher.json"   # in the student's train_dir: the teacher checkpoint and cache used

# checkpoint: the teacher checkpoint restored (None in parallel KD); flags: its model flags; cache: the
# TeacherCache read instead of running it, or None; named: the checkpoint --teacher_checkpoint (or the
# cache) names; precise_bn: the precise_bn.record() of `checkpoint` when its batch-norm statistics were
# recomputed from `named`, else None.
Teacher = collections.namedtuple("Teacher", "checkpoint flags cache named precise_bn", defaults=(None, None))
NO_TEACHER = Teacher(None, None, None)
PRECISE_BN_DIR = "teacher_precise_bn"   # in the student's train_dir
# A frozen teacher whose moving batch-norm statistics still hold more than this share of their initial
# values (decay^steps) gets a warning, unless they are recomputed.
UNCONVERGED_SHARE = 0.05


def setup(opts, model_flags):
  """The run's Teacher (NO_TEACHER unless --model_type=kd). With --teacher_cache the cache's manifest
  names the checkpoint and flags; a --teacher_checkpoint given as well must be the same. A teacher
  checkpoint is exactly the one named (a train_dir: its latest), read back whole: a damaged one is
  refused, never replaced by an older one. InputError for a teacher that does not fit the run."""
  if model_flags["model_type"] != "kd":
    for flag in ("teacher_cache", "share_teacher_classifier"):
      if getattr(opts, flag):
        raise InputError("--%s is for --model_type=kd (this run is --model_type=%s)"
                         % (flag, model_flags["model_type"]))
    return NO_TEACHER
  if opts.teacher_cache:
    teacher_cache.check_usable(opts)
  if not model_flags["frame_features"]:
    raise InputError("--model_type=kd needs frame-level data (--frame_features=True): the student reads "
                     "k of the frames the teacher reads")
  if opts.kd_mode == "parallel":
    if opts.share_teacher_classifier:
      raise InputError("--share_teacher_classifier starts the student from a trained teacher's classifier: "
                       "it needs --kd_mode=serial")
    return Teacher(None, dict(model_flags, model_type="teacher", k_frame=model_flags["max_frames"]), None)
  cache = teacher_cache.TeacherCache(opts.teacher_cache) if opts.teacher_cache else None
  if not opts.teacher_checkpoint and cache is None:
    raise InputError("--model_type=kd needs --teacher_checkpoint (a teacher train_dir or checkpoint)")
  if opts.teacher_checkpoint:
    checkpoint = checkpoints.choose(opts.teacher_checkpoint, "--teacher_checkpoint", fallback=False)
    teacher_flags = config.load_model_flags(model_utils.train_dir_of(checkpoint))
    if cache is not None:
      cache.check_teacher(checkpoint, teacher_flags)
  else:
    checkpoint, teacher_flags = cache.teacher_checkpoint, cache.teacher_flags
    if opts.student_init_from_teacher or opts.share_teacher_classifier:
      checkpoint = checkpoints.choose(
          checkpoint, "the checkpoint of --teacher_cache=%s (for --student_init_from_teacher or "
          "--share_teacher_classifier)" % opts.teacher_cache, fallback=False)
  if cache is not None and opts.pred_weight and opts.pred_loss == "kl" and not cache.has_logits:
    raise InputError("--pred_loss=kl needs the teacher's logits: %s was written with --cache_logits=False"
                     % cache.describe())
  source = ("--teacher_checkpoint=%s" % opts.teacher_checkpoint if opts.teacher_checkpoint
            else "the teacher of " + cache.describe())
  for name in ("num_classes", "feature_names", "feature_sizes", "frame_features", "max_frames"):
    if teacher_flags[name] != model_flags[name]:
      raise InputError("%s was trained with %s=%s, this run has %s=%s"
                       % (source, name, teacher_flags[name], name, model_flags[name]))
  if cache is not None:
    _check_cache_statistics(cache, opts.precise_bn_batches)
    return Teacher(checkpoint, teacher_flags, cache, checkpoint, cache.precise_bn)
  if opts.precise_bn_batches and precise_bn.applies(checkpoint):
    precise = precise_bn.recompute(checkpoint, opts.train_data_pattern, opts.precise_bn_batches,
                                   os.path.join(opts.train_dir, PRECISE_BN_DIR), opts.batch_size,
                                   opts.seed, opts.num_readers)
    return Teacher(precise, teacher_flags, None, checkpoint,
                   precise_bn.record(checkpoint, opts.train_data_pattern, opts.precise_bn_batches,
                                     opts.batch_size, opts.seed))
  warn_if_unconverged(checkpoint, teacher_flags, source)
  return Teacher(checkpoint, teacher_flags, None, checkpoint)


def _check_cache_statistics(cache, precise_bn_batches):
  """A cache holds the teacher it was written with: --precise_bn_batches must agree with it."""
  cached = cache.precise_bn["batches"] if cache.precise_bn else 0
  # A teacher without batch norm has nothing to recompute; one whose checkpoint is not here is assumed to.
  readable = tf.io.gfile.exists(cache.teacher_checkpoint + ".index")
  has_statistics = not readable or precise_bn.applies(cache.teacher_checkpoint)
  if precise_bn_batches and precise_bn_batches != cached and has_statistics:
    raise InputError("--precise_bn_batches=%d but %s was written with %s; write the cache with "
                     "cache_teacher.py --precise_bn_batches=%d" % (
                         precise_bn_batches, cache.describe(),
                         "precise statistics from %d batches" % cached if cached else "the moving averages",
                         precise_bn_batches))
  if not cached:
    warn_if_unconverged(cache.teacher_checkpoint, cache.teacher_flags, "the teacher of " + cache.describe(),
                        cache.manifest["global_step"])


def warn_if_unconverged(checkpoint, teacher_flags, source, step=None):
  """One warning line when a frozen teacher's moving batch-norm statistics still hold more than
  UNCONVERGED_SHARE of their initial values (decay^step), since they will be used as they are."""
  try:
    names = [name for name, _ in tf.train.list_variables(checkpoint)]
    step = step if step is not None else int(tf.train.load_checkpoint(checkpoint).get_tensor("global_step"))
  except (tf.errors.OpError, ValueError):
    return
  share = float(teacher_flags.get("batchnorm_decay", 0.0)) ** step
  if share > UNCONVERGED_SHARE and any(name.endswith("moving_mean") for name in names):
    tf.logging.warning("%s: its batch-norm moving statistics still hold %.0f%% of their initial values "
                       "(--batchnorm_decay=%g, %d steps) and the frozen teacher uses them as they are; "
                       "--precise_bn_batches=200 recomputes them from the training data",
                       source, 100 * share, teacher_flags["batchnorm_decay"], step)


def is_live(teacher):
  """Whether the run builds the teacher's graph (serial from a checkpoint, or parallel)."""
  return teacher.flags is not None and teacher.cache is None


def local_scopes(teacher):
  """Variable scopes every worker keeps on its own CPU: a live serial teacher's."""
  return ("teacher/",) if teacher.checkpoint and teacher.cache is None else ()


def teacher_frames(teacher, model_flags, batch):
  """Puts the live teacher's frames into `batch` (teacher_matrix, teacher_num_frames): all frames
  (the reader's full_* tensors) or, for a teacher that reads the student's k frames by the same
  sampling, the student's. InputError for any other teacher."""
  if config.frames_read(teacher.flags) is None:
    batch["teacher_matrix"], batch["teacher_num_frames"] = (batch.pop("full_video_matrix"),
                                                            batch.pop("full_num_frames"))
  elif config.frames_read(teacher.flags) == config.frames_read(model_flags) and \
      teacher.flags["frame_sampling"] == model_flags["frame_sampling"]:
    batch["teacher_matrix"], batch["teacher_num_frames"] = batch["video_matrix"], batch["num_frames"]
  else:
    raise InputError("the teacher reads %s frames by %s sampling; a KD teacher must read all frames "
                     "or the student's frames" % (teacher.flags["k_frame"], teacher.flags["frame_sampling"]))


def _frozen_getter(getter, *args, **kwargs):
  """Serial KD: the teacher's variables are local and not trainable (restored, never trained)."""
  kwargs["trainable"] = False
  kwargs["collections"] = [tf.GraphKeys.LOCAL_VARIABLES]
  return getter(*args, **kwargs)


def tower_outputs(teacher, opts, tower_batch):
  """The teacher's outputs (predictions, logits, representation) in one tower: read from a cache (the
  batch carries teacher_* outputs) or built in scope `teacher/`, frozen in serial KD."""
  if "teacher_representation" in tower_batch:
    return {name: tower_batch["teacher_" + name] for name in teacher_cache.OUTPUTS
            if "teacher_" + name in tower_batch}
  parallel = opts.kd_mode == "parallel"
  with tf.variable_scope("", custom_getter=None if parallel else _frozen_getter):
    return model_utils.build_model(teacher.flags, tower_batch["teacher_matrix"],
                                   tower_batch["teacher_num_frames"],
                                   is_training=parallel or opts.kd_teacher_is_training, scope="teacher")


def matched_student(teacher_outputs, student_outputs, model_flags, rep_weight):
  """The student's outputs as the distillation terms see them. With --rep_projection its representation
  E_S [B, S] becomes E_S · P + p, P [S, T] learned in the student's scope (rep_projection/: trained with
  the student, unused at inference), T the teacher's size; without it L_rep compares the two vectors
  as they are, and two sizes are an InputError (before any training)."""
  sizes = [m["representation"].shape.as_list()[-1] for m in (teacher_outputs, student_outputs)]
  if model_flags["rep_projection"]:
    with tf.variable_scope(config.role_scope(model_flags), reuse=tf.AUTO_REUSE,
                           initializer=layers.weight_initializer(model_flags["weight_init"])):
      projected = layers.dense(student_outputs["representation"], sizes[0], scope="rep_projection")
    return dict(student_outputs, representation=projected)                     # [B, T]
  if rep_weight and sizes[0] != sizes[1]:
    raise InputError("L_rep needs representations of one size: the teacher's has %s values, the "
                     "student's %s; use the teacher's size, --rep_projection or --rep_weight=0"
                     % tuple(sizes))
  return student_outputs


def savers(teacher, init_student, share_classifier=False):
  """(teacher saver, init_fn): a Saver restoring the live teacher's `teacher/` variables (None for a
  cached or parallel teacher) and an init_fn restoring from the teacher checkpoint, whatever scope the
  teacher was trained in, `student/` (--student_init_from_teacher) or only the student's classifier
  `student/classifier/` (--share_teacher_classifier: the paper's shared output layer, as a start).
  Call after the towers are built; InputError listing missing variables and shape mismatches before
  any training."""
  if not teacher.checkpoint:
    return None, None
  scope = config.role_scope(teacher.flags)
  teacher_saver = init_fn = None
  if teacher.cache is None:
    teacher_vars = model_utils.scope_variables("teacher") + [
        v for v in tf.local_variables() if v.op.name.startswith("teacher/")]
    teacher_saver = tf.train.Saver(model_utils.restore_map(
        teacher.checkpoint, scope, teacher_vars, "teacher", "--teacher_checkpoint"))
  if init_student or share_classifier:
    restored = model_utils.scope_variables("student" if init_student else "student/classifier")
    if not restored:
      raise InputError("--share_teacher_classifier: the student has no classifier/ scope to share")
    init_saver = tf.train.Saver(model_utils.restore_map(
        teacher.checkpoint, scope, restored, "student",
        "--teacher_checkpoint (for --%s)" % ("student_init_from_teacher" if init_student
                                             else "share_teacher_classifier")))
    init_fn = lambda sess: init_saver.restore(sess, teacher.checkpoint)
  return teacher_saver, init_fn


def check_resume(opts, latest, teacher):
  """A KD run resumes in the mode it started in; a teacher checkpoint other than last time's is
  reported."""
  has_teacher = any(name.startswith("teacher/") for name, _ in tf.train.list_variables(latest))
  if has_teacher != (opts.kd_mode == "parallel"):
    raise InputError("--kd_mode=%s: %s was trained with --kd_mode=%s; resume it in that mode"
                     % (opts.kd_mode, latest, "parallel" if has_teacher else "serial"))
  path = os.path.join(opts.train_dir, RECORD_FILE)
  if teacher.checkpoint and tf.io.gfile.exists(path):
    recorded = utils.read_json(path, "the teacher record train.py writes")
    before = (recorded.get("teacher_checkpoint"), recorded.get("precise_bn"))
    if before != (teacher.named, teacher.precise_bn):
      tf.logging.warning("This KD run was distilled from %s (precise batch-norm statistics: %s) until "
                         "now; it continues with %s (%s).", before[0], before[1], teacher.named,
                         teacher.precise_bn)


def write_record(train_dir, teacher):
  """train_dir/kd_teacher.json: the teacher checkpoint and cache of a serial KD run."""
  if teacher.checkpoint:
    utils.write_json_atomic(os.path.join(train_dir, RECORD_FILE),
                            {"teacher_checkpoint": teacher.named, "restored_checkpoint": teacher.checkpoint,
                             "precise_bn": teacher.precise_bn,
                             "teacher_cache": teacher.cache.cache_dir if teacher.cache else None})


def log_restore(sess, teacher_saver, teacher, opts):
  """Restores the live teacher (after the session opens) and says where the teacher comes from."""
  if teacher_saver is not None:
    teacher_saver.restore(sess, teacher.checkpoint)
    tf.logging.info("Teacher restored from %s (frozen, %s mode%s).", teacher.checkpoint,
                    "training" if opts.kd_teacher_is_training else "inference",
                    ", batch-norm statistics recomputed from %d batches" % teacher.precise_bn["batches"]
                    if teacher.precise_bn else "")
  elif teacher.cache is not None:
    tf.logging.info("Teacher outputs read from %s; no teacher graph.", teacher.cache.describe())
