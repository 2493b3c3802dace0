"""Trains a teacher (all frames), a student (k frames) or a distilled student (--model_type=kd).

Flag-driven like the YouTube-8M starter code; the seed's command line runs as written. One tower per
GPU (--num_gpu) with the batch split across towers and gradients averaged, CPU fallback; Adam with the
starter's example-count staircase decay; checkpoints every --export_model_steps steps, every
--save_checkpoint_minutes and when training stops; TensorBoard summaries; distributed training from
TF_CONFIG (ps / worker / chief) with asynchronous updates.
"""

import json
import os
import signal
import sys
import threading
import time

import numpy as np
import tensorflow.compat.v1 as tf

import config
import eval_util
import kd_losses
import model_utils
import readers
import teacher_cache
import utils
from utils import InputError

flags = tf.flags
FLAGS = flags.FLAGS

config.define_model_flags()
config.define_flag(flags.DEFINE_string, "train_dir", "/tmp/yt8m_model/", "Checkpoints, model_flags.json and summaries.")
config.define_flag(flags.DEFINE_string, "train_data_pattern", "", "Glob(s) of training shards, comma-separated.")
config.define_flag(flags.DEFINE_bool, "start_new_model", False,
                  "Start from scratch; refused if --train_dir already holds checkpoints.")
config.define_flag(flags.DEFINE_float, "base_learning_rate", 0.01, "Initial learning rate.")
config.define_flag(flags.DEFINE_float, "learning_rate_decay", 0.95, "Learning rate factor per decay period.")
config.define_flag(flags.DEFINE_float, "learning_rate_decay_examples", 4000000, "Examples per decay period (staircase).")
config.define_flag(flags.DEFINE_integer, "num_epochs", 5, "Passes over the training data (0: no limit).")
config.define_flag(flags.DEFINE_integer, "max_steps", 0, "Stop at this global step (0: no limit).")
if "max_step" not in FLAGS:
  flags.DEFINE_alias("max_step", "max_steps")
config.define_flag(flags.DEFINE_integer, "export_model_steps", 1000, "Checkpoint every this many steps.")
config.define_flag(flags.DEFINE_float, "save_checkpoint_minutes", 10.0, "Also checkpoint every this many minutes.")
config.define_flag(flags.DEFINE_integer, "keep_checkpoint_max", 5, "Most recent checkpoints kept.")
config.define_flag(flags.DEFINE_float, "keep_checkpoint_every_n_hours", 10000.0, "Also keep one checkpoint per this many hours.")
config.define_flag(flags.DEFINE_float, "clip_gradient_norm", 1.0, "Clip gradients to this norm (0: no clipping).")
config.define_flag(flags.DEFINE_string, "gradient_clipping", "per_variable",
                   "per_variable: each variable's averaged gradient clipped to --clip_gradient_norm (the "
                   "seed's); global: all gradients scaled together to that global norm.")
config.define_flag(flags.DEFINE_float, "regularization_penalty", 1.0, "Weight of the models' L2 regularisation losses.")
config.define_flag(flags.DEFINE_integer, "num_gpu", 1, "Towers: one per GPU. Without GPUs one tower runs on the CPU.")
config.define_flag(flags.DEFINE_string, "visible_gpu", "", "CUDA_VISIBLE_DEVICES for this process (the seed's flag).")
config.define_flag(flags.DEFINE_integer, "log_every_steps", 10, "Log loss, examples/sec and ETA every this many steps.")
config.define_flag(flags.DEFINE_integer, "summary_every_steps", 10, "Write TensorBoard summaries every this many steps.")
config.define_flag(flags.DEFINE_integer, "shuffle_buffer", 2048, "Videos in the training shuffle buffer.")
config.define_flag(flags.DEFINE_integer, "seed", 0, "Graph-level random seed (initialisation, shuffling, random frames).")
# Distillation (--model_type=kd).
config.define_flag(flags.DEFINE_string, "teacher_checkpoint", "", "Teacher checkpoint or teacher train_dir (kd).")
config.define_flag(flags.DEFINE_string, "teacher_cache", "",
                   "Serial kd: read the teacher's outputs from this cache_teacher.py directory instead of "
                   "running the teacher (--teacher_checkpoint, if given, must be the cached one).")
config.define_flag(flags.DEFINE_string, "kd_mode", "serial",
                    "serial: frozen pre-trained teacher; parallel: teacher trained on its own L_CE "
                    "in the same run.")
config.define_flag(flags.DEFINE_float, "ce_weight", 1.0, "Weight of L_CE (kd).")
config.define_flag(flags.DEFINE_float, "pred_weight", 0.8, "Weight of L_pred, a batch mean (the seed's 0.01 per batch of 80).")
config.define_flag(flags.DEFINE_float, "rep_weight", 0.08, "Weight of L_rep, a batch mean (the seed's 0.001 per batch of 80).")
config.define_flag(flags.DEFINE_string, "pred_loss", "mse", "L_pred: mse on probabilities (paper) or kl on soft targets.")
config.define_flag(flags.DEFINE_float, "temperature", 1.0, "Temperature of --pred_loss=kl.")
config.define_flag(flags.DEFINE_bool, "student_init_from_teacher", False, "Start the student from the teacher's weights.")
config.define_flag(flags.DEFINE_bool, "kd_teacher_is_training", False,
                   "Build the serial KD teacher in training mode like the seed (dropout, batch statistics, "
                   "its moving statistics updated during KD); default: inference mode, bitwise frozen.")
config.define_flag(flags.DEFINE_bool, "kd_regularization", False,
                   "Add the student's L2 penalty to the KD loss (the seed's KD loss has none).")


# -- devices and cluster --------------------------------------------------------------------------------
def tower_devices(num_gpu, worker_device=""):
  """One device per tower: the first num_gpu GPUs, or one CPU tower if this machine has none."""
  gpus = tf.config.list_physical_devices("GPU")
  if num_gpu > 0 and gpus:
    if len(gpus) < num_gpu:
      tf.logging.warning("--num_gpu=%d but only %d GPU(s) visible: using %d towers",
                         num_gpu, len(gpus), len(gpus))
    return ["%s/device:GPU:%d" % (worker_device, i) for i in range(min(num_gpu, len(gpus)))]
  if num_gpu > 0:
    tf.logging.info("No GPU visible: training one tower on the CPU.")
  return ["%s/device:CPU:0" % worker_device]


VARIABLE_OPS = ("Variable", "VariableV2", "VarHandleOp")


def tower_placement(tower_device, worker_device, cluster, local_scopes=()):
  """Device function of one tower: its ops on `tower_device`; variables on the parameter servers
  (distributed) or on this worker's CPU (shared by the local towers), except those of
  `local_scopes` (a serial KD teacher), which every worker keeps on its own CPU."""
  ps_setter = tf.train.replica_device_setter(cluster=cluster) if cluster is not None else None
  worker_cpu = "%s/device:CPU:0" % worker_device

  def place(op):
    if op.type in VARIABLE_OPS:
      if ps_setter is None or op.name.startswith(tuple(local_scopes)):
        return worker_cpu
      return ps_setter(op)
    return tower_device
  return place


def cluster_from_tf_config():
  """(ClusterSpec, task type, task index) from TF_CONFIG, or (None, 'master', 0) when not distributed."""
  spec = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
  cluster = spec.get("cluster")
  if not cluster:
    return None, "master", 0
  task = spec.get("task", {})
  task_type, task_index = task.get("type"), int(task.get("index", 0))
  if task_type not in cluster:
    raise InputError("TF_CONFIG task type %r is not a job of its cluster %s" % (task_type, sorted(cluster)))
  return tf.train.ClusterSpec(cluster), task_type, task_index


def is_chief(cluster, task_type, task_index):
  if cluster is None or task_type in ("chief", "master"):
    return True
  jobs = cluster.jobs
  return task_type == "worker" and task_index == 0 and "chief" not in jobs and "master" not in jobs


# -- graph ------------------------------------------------------------------------------------------------
def average_gradients(tower_grads):
  """Mean over towers of each variable's gradient (same variable order in every tower)."""
  averaged = []
  for grads_and_vars in zip(*tower_grads):
    grads = [g for g, _ in grads_and_vars if g is not None]
    var = grads_and_vars[0][1]
    averaged.append((tf.add_n(grads) / len(grads) if grads else None, var))
  return averaged


GRADIENT_CLIPPING = ("per_variable", "global")


def clip_gradients(grads_and_vars, max_norm, mode):
  """per_variable (the seed's): each gradient g becomes g * max_norm / max(||g||, max_norm);
  global: every gradient scaled by max_norm / max(global norm, max_norm). max_norm <= 0: unchanged."""
  if max_norm <= 0:
    return grads_and_vars
  if mode == "per_variable":
    return [(tf.clip_by_norm(g, max_norm) if g is not None else None, v) for g, v in grads_and_vars]
  clipped, _ = tf.clip_by_global_norm([g for g, _ in grads_and_vars], max_norm)
  return [(c, v) for c, (_, v) in zip(clipped, grads_and_vars)]


def _frozen_teacher_getter(getter, *args, **kwargs):
  """Serial KD: the teacher's variables are local (never checkpointed with the student, never shared
  through parameter servers) and not trainable; they are restored from the teacher checkpoint."""
  kwargs["trainable"] = False
  kwargs["collections"] = [tf.GraphKeys.LOCAL_VARIABLES]
  return getter(*args, **kwargs)


def build_training_graph(model_flags, opts, batch, devices, teacher_flags=None):
  """Towers, losses, averaged gradients and the train op. Returns a dict of tensors to run."""
  global_step = tf.train.get_or_create_global_step()
  num_towers = len(devices)
  examples = tf.cast(global_step, tf.float32) * float(opts.batch_size * num_towers)
  learning_rate = tf.train.exponential_decay(opts.base_learning_rate, examples,
                                             opts.learning_rate_decay_examples,
                                             opts.learning_rate_decay, staircase=True)
  optimizer = tf.train.AdamOptimizer(learning_rate)
  kd = model_flags["model_type"] == "kd"
  parallel = kd and opts.kd_mode == "parallel"
  splits = {key: tf.split(value, num_towers) for key, value in batch.items() if key != "video_ids"}
  label_loss = model_utils.label_loss(model_flags)
  scope = config.role_scope(model_flags)

  tower_grads, tower_terms, tower_outputs = [], [], []
  update_ops = []
  for i, device in enumerate(devices):
    with tf.device(device), tf.name_scope("tower_%d" % i) as name_scope:
      labels = splits["labels"][i]
      student = model_utils.build_model(model_flags, splits["video_matrix"][i],
                                        splits["num_frames"][i], is_training=True, scope=scope)
      ce = model_utils.training_label_loss(label_loss, student, labels)
      terms = {"ce": ce}
      loss = ce
      teacher = None
      if kd:
        if "teacher_representation" in splits:  # --teacher_cache: the frozen teacher's outputs, read
          teacher = {name: splits["teacher_" + name][i] for name in teacher_cache.OUTPUTS
                     if "teacher_" + name in splits}
        else:
          with tf.variable_scope("", custom_getter=None if parallel else _frozen_teacher_getter):
            teacher = model_utils.build_model(teacher_flags, splits["teacher_matrix"][i],
                                              splits["teacher_num_frames"][i],
                                              is_training=parallel or opts.kd_teacher_is_training,
                                              scope="teacher")
        sizes = [m["representation"].shape[-1] for m in (teacher, student)]
        if opts.rep_weight and sizes[0] != sizes[1]:
          raise InputError("L_rep needs representations of one size: the teacher's has %s values, the "
                           "student's %s (--nextvlad_hidden_size); use the teacher's size or --rep_weight=0"
                           % tuple(sizes))
        loss, terms = kd_losses.distillation_loss(ce, teacher, student, opts.ce_weight,
                                                  opts.pred_weight, opts.rep_weight,
                                                  opts.pred_loss, opts.temperature)
        if parallel:
          terms["teacher_ce"] = model_utils.training_label_loss(label_loss, teacher, labels)
          loss += terms["teacher_ce"]
      # A frozen teacher's penalty is a constant: it stays out of the student's loss and its summaries.
      # The seed's KD loss has no L2 term for the student either (--kd_regularization adds it).
      student_penalty = not kd or opts.kd_regularization
      regularization = [r for r in tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES, name_scope)
                        if (parallel if kd and r.name.startswith(name_scope + "teacher/")
                            else student_penalty)]
      if regularization:
        terms["regularization"] = tf.add_n(regularization)
        loss += opts.regularization_penalty * terms["regularization"]
      terms["total"] = loss
      tower_grads.append(optimizer.compute_gradients(loss, var_list=tf.trainable_variables(),
                                                     colocate_gradients_with_ops=True))
      tower_terms.append(terms)
      tower_outputs.append((student["predictions"],
                            teacher["predictions"] if teacher is not None else None))
      if i == 0:  # Batch-norm statistics: updated once per step, from the first tower's batch.
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS, name_scope)

  grads = clip_gradients(average_gradients(tower_grads), opts.clip_gradient_norm,
                         opts.gradient_clipping)
  with tf.control_dependencies(update_ops):
    train_op = optimizer.apply_gradients(grads, global_step=global_step)

  losses = {name: tf.add_n([t[name] for t in tower_terms]) / num_towers for name in tower_terms[0]}
  for name, value in losses.items():
    tf.summary.scalar("loss/" + name if name != "total" else "loss", value)
  tf.summary.scalar("learning_rate", learning_rate)
  fetch = {"train_op": train_op, "global_step": global_step, "losses": losses,
           "learning_rate": learning_rate, "labels": batch["labels"], "gradients": grads,
           "predictions": tf.concat([p for p, _ in tower_outputs], 0)}
  if kd:
    fetch["teacher_predictions"] = tf.concat([t for _, t in tower_outputs], 0)
  return fetch


# -- the run ----------------------------------------------------------------------------------------------
def _teacher_setup(opts, model_flags):
  """Teacher checkpoint, flags (the teacher train_dir's model_flags.json) and cache (None: the teacher
  runs live) for KD. With --teacher_cache the cache's manifest names the checkpoint and flags; a
  --teacher_checkpoint given as well must be the same."""
  if model_flags["model_type"] != "kd":
    if opts.teacher_cache:
      raise InputError("--teacher_cache is for --model_type=kd (this run is --model_type=%s)"
                       % model_flags["model_type"])
    return None, None, None
  if opts.kd_mode not in ("serial", "parallel"):
    raise InputError("--kd_mode=%r: expected serial or parallel" % opts.kd_mode)
  if opts.teacher_cache:
    teacher_cache.check_usable(opts)
  if not model_flags["frame_features"]:
    raise InputError("--model_type=kd needs frame-level data (--frame_features=True): the student reads "
                     "k of the frames the teacher reads")
  if opts.kd_mode == "parallel":
    teacher_flags = dict(model_flags, model_type="teacher", k_frame=model_flags["max_frames"])
    return None, teacher_flags, None
  cache = teacher_cache.TeacherCache(opts.teacher_cache) if opts.teacher_cache else None
  if not opts.teacher_checkpoint and cache is None:
    raise InputError("--model_type=kd needs --teacher_checkpoint (a teacher train_dir or checkpoint)")
  if opts.teacher_checkpoint:
    checkpoint = model_utils.resolve_checkpoint(opts.teacher_checkpoint, "--teacher_checkpoint")
    teacher_flags = config.load_model_flags(model_utils.train_dir_of(checkpoint))
    if cache is not None:
      cache.check_teacher(checkpoint, teacher_flags)
  else:
    checkpoint, teacher_flags = cache.teacher_checkpoint, cache.teacher_flags
    if opts.student_init_from_teacher:
      checkpoint = model_utils.resolve_checkpoint(
          checkpoint, "the checkpoint of --teacher_cache=%s (for --student_init_from_teacher)" % opts.teacher_cache)
  if cache is not None and opts.pred_weight and opts.pred_loss == "kl" and not cache.has_logits:
    raise InputError("--pred_loss=kl needs the teacher's logits: %s was written with --cache_logits=False"
                     % cache.describe())
  source = ("--teacher_checkpoint=%s" % opts.teacher_checkpoint if opts.teacher_checkpoint
            else "the teacher of " + cache.describe())
  for name in ("num_classes", "feature_names", "feature_sizes", "frame_features", "max_frames"):
    if teacher_flags[name] != model_flags[name]:
      raise InputError("%s was trained with %s=%s, this run has %s=%s"
                       % (source, name, teacher_flags[name], name, model_flags[name]))
  return checkpoint, teacher_flags, cache


def _input_batch(opts, model_flags, teacher_flags, num_towers, cache=None):
  """Training batches; in KD mode the teacher's frames (per its own flags) ride along, or with a
  teacher cache its outputs (the student's k frames are then the only frames read)."""
  live_teacher = teacher_flags is not None and cache is None
  teacher_reads_all = live_teacher and config.frames_read(teacher_flags) is None
  reader = model_utils.make_reader(model_flags, also_full_frames=teacher_reads_all, seed=opts.seed)
  files = readers.resolve_files(opts.train_data_pattern, "--train_data_pattern")
  batch, init = reader.input_batch(files, opts.batch_size * num_towers, training=True,
                                   num_readers=opts.num_readers,
                                   num_epochs=opts.num_epochs or None,
                                   shuffle_buffer=opts.shuffle_buffer, seed=opts.seed,
                                   teacher_cache=cache)
  if live_teacher:
    if teacher_reads_all:
      batch["teacher_matrix"], batch["teacher_num_frames"] = (batch.pop("full_video_matrix"),
                                                              batch.pop("full_num_frames"))
    elif config.frames_read(teacher_flags) == config.frames_read(model_flags) and \
        teacher_flags["frame_sampling"] == model_flags["frame_sampling"]:
      batch["teacher_matrix"], batch["teacher_num_frames"] = batch["video_matrix"], batch["num_frames"]
    else:
      raise InputError("the teacher reads %s frames by %s sampling; a KD teacher must read all frames "
                       "or the student's frames" % (teacher_flags["k_frame"], teacher_flags["frame_sampling"]))
  return batch, init, files, reader


KD_TEACHER_FILE = "kd_teacher.json"


def _check_kd_resume(opts, latest, teacher_checkpoint):
  """A KD run resumes in the mode it started in; a teacher checkpoint other than last time's is reported."""
  has_teacher = any(name.startswith("teacher/") for name, _ in tf.train.list_variables(latest))
  if has_teacher != (opts.kd_mode == "parallel"):
    raise InputError("--kd_mode=%s: %s was trained with --kd_mode=%s; resume it in that mode"
                     % (opts.kd_mode, latest, "parallel" if has_teacher else "serial"))
  record = os.path.join(opts.train_dir, KD_TEACHER_FILE)
  if teacher_checkpoint and tf.io.gfile.exists(record):
    with tf.io.gfile.GFile(record) as f:
      before = json.load(f)["teacher_checkpoint"]
    if before != teacher_checkpoint:
      tf.logging.warning("This KD run was distilled from %s until now; it continues with %s.",
                         before, teacher_checkpoint)


def _check_train_dir(opts, chief):
  latest = tf.train.latest_checkpoint(opts.train_dir) if tf.io.gfile.exists(opts.train_dir) else None
  if opts.start_new_model and latest and chief:
    raise InputError("--train_dir=%s already holds %s: pass --start_new_model=False to resume it, or "
                     "choose a new --train_dir (nothing is deleted)" % (opts.train_dir, latest))
  return latest


def _batch_metrics(predictions, labels):
  """Hit@1 and GAP of a training batch; NaN (never an exception) where a prediction is not finite."""
  if not np.isfinite(predictions).all():
    return float("nan"), float("nan")
  return (eval_util.calculate_hit_at_one(predictions, labels),
          eval_util.calculate_gap(predictions, labels))


def _log_and_summarize(values, step, opts, writer, examples_per_sec, eta):
  losses = values["losses"]
  hit, gap = _batch_metrics(values["predictions"], values["labels"])
  parts = ["step %d" % step] + ["%s %.4g" % (k, v) for k, v in sorted(losses.items())]
  parts += ["GAP %.3f" % gap, "Hit@1 %.3f" % hit]
  summaries = [utils.scalar_summary("train/gap", gap), utils.scalar_summary("train/hit_at_one", hit),
               utils.scalar_summary("global_step/examples_per_sec", examples_per_sec)]
  if "teacher_predictions" in values:
    teacher_gap = _batch_metrics(values["teacher_predictions"], values["labels"])[1]
    parts.append("teacher GAP %.3f" % teacher_gap)
    summaries.append(utils.scalar_summary("train/teacher_gap", teacher_gap))
  parts.append("%.1f examples/sec" % examples_per_sec)
  if eta is not None:
    parts.append("ETA %s" % time.strftime("%H:%M:%S", time.gmtime(eta)))
  tf.logging.info(" | ".join(parts))
  if writer is not None:
    for summary in summaries:
      writer.add_summary(summary, step)


def teacher_savers(teacher_checkpoint, teacher_flags, init_student, live_teacher=True):
  """Savers restoring the KD graph's `teacher/` (unless the teacher is cached, not live) and, with
  --student_init_from_teacher, `student/` from the teacher checkpoint, whatever scope the teacher
  was trained in. Raises InputError listing missing variables and shape mismatches before any
  training."""
  scope = config.role_scope(teacher_flags)
  teacher_saver = init_fn = None
  if live_teacher:
    teacher_vars = model_utils.scope_variables("teacher") + [
        v for v in tf.local_variables() if v.op.name.startswith("teacher/")]
    teacher_saver = tf.train.Saver(model_utils.restore_map(
        teacher_checkpoint, scope, teacher_vars, "teacher", "--teacher_checkpoint"))
  if init_student:
    init_saver = tf.train.Saver(model_utils.restore_map(
        teacher_checkpoint, scope, model_utils.scope_variables("student"), "student",
        "--teacher_checkpoint (for --student_init_from_teacher)"))
    init_fn = lambda sess: init_saver.restore(sess, teacher_checkpoint)
  return teacher_saver, init_fn


def check_flags(opts, model_flags):
  """Every numeric flag in its meaningful range, before anything is built or written (InputError)."""
  check = utils.check_flag
  positive_ints = ("batch_size", "num_readers", "export_model_steps", "log_every_steps",
                   "summary_every_steps", "shuffle_buffer")
  for name in positive_ints:
    check(name, getattr(opts, name), getattr(opts, name) >= 1, "a positive integer")
  for name in ("num_epochs", "max_steps", "keep_checkpoint_max", "num_gpu"):
    check(name, getattr(opts, name), getattr(opts, name) >= 0, "0 (no limit / none) or more")
  check("num_classes", model_flags["num_classes"], model_flags["num_classes"] >= 1, "a positive integer")
  check("max_frames", model_flags["max_frames"], model_flags["max_frames"] >= 1, "a positive integer")
  k, max_frames = model_flags["k_frame"], model_flags["max_frames"]
  if model_flags["frame_features"] and k > max_frames and not (
      model_flags["model_type"] == "teacher" and k == config.DEFAULT_K_FRAME):
    check("k_frame", k, False, "at most --max_frames=%d (the frames kept per video); a teacher reads "
          "all of them by default" % max_frames)
  check("base_learning_rate", opts.base_learning_rate, opts.base_learning_rate > 0, "a positive rate")
  check("learning_rate_decay", opts.learning_rate_decay, 0 < opts.learning_rate_decay <= 1,
        "a factor in (0, 1]")
  check("learning_rate_decay_examples", opts.learning_rate_decay_examples,
        opts.learning_rate_decay_examples > 0, "a positive number of examples")
  for name in ("clip_gradient_norm", "regularization_penalty", "ce_weight", "pred_weight",
               "rep_weight"):
    check(name, getattr(opts, name), getattr(opts, name) >= 0, "0 (off) or a positive number")
  check("l2_penalty", model_flags["l2_penalty"], model_flags["l2_penalty"] >= 0, "0 or more")
  check("drop_rate", model_flags["drop_rate"], 0 <= model_flags["drop_rate"] < 1, "a rate in [0, 1)")
  for name in ("groups", "nextvlad_cluster_size", "nextvlad_hidden_size", "expansion",
               "gating_reduction", "moe_num_mixtures"):
    check(name, model_flags[name], model_flags[name] >= 1, "a positive integer")
  check("temperature", opts.temperature, opts.temperature > 0, "a positive temperature")
  check("batchnorm_decay", model_flags["batchnorm_decay"], 0 <= model_flags["batchnorm_decay"] < 1,
        "a decay in [0, 1)")
  check("mix_number", model_flags["mix_number"], model_flags["mix_number"] >= 1, "a positive integer")
  check("cl_temperature", model_flags["cl_temperature"], model_flags["cl_temperature"] > 0,
        "a positive temperature")
  check("cl_lambda", model_flags["cl_lambda"], model_flags["cl_lambda"] >= 0, "0 (off) or more")
  check("save_checkpoint_minutes", opts.save_checkpoint_minutes, opts.save_checkpoint_minutes > 0,
        "a positive number of minutes")
  check("keep_checkpoint_every_n_hours", opts.keep_checkpoint_every_n_hours,
        opts.keep_checkpoint_every_n_hours > 0, "a positive number of hours")
  if model_flags["model_type"] == "kd" and not (opts.ce_weight or opts.pred_weight or opts.rep_weight):
    raise InputError("--ce_weight, --pred_weight and --rep_weight are all 0: nothing to train on")


class TrainingRun(object):
  """A prepared run: session (initialised or restored, teacher loaded), graph tensors and savers."""

  def __init__(self, **parts):
    self.__dict__.update(parts)

  def close(self):
    """Closes the session and releases the train_dir lock."""
    self.sess.close()
    if self.lock is not None:
      self.lock.release()


def prepare(opts):
  """Validates flags and files, builds the graph, opens the session. None for a parameter server
  (which serves until killed)."""
  if opts.visible_gpu:
    os.environ["CUDA_VISIBLE_DEVICES"] = str(opts.visible_gpu)
  model_flags = config.model_flags_from(opts.flag_values_dict() if hasattr(opts, "flag_values_dict")
                                        else vars(opts))
  check_flags(opts, model_flags)
  cluster, task_type, task_index = cluster_from_tf_config()
  chief = is_chief(cluster, task_type, task_index)
  if task_type == "ps":
    server = tf.train.Server(cluster, job_name="ps", task_index=task_index)
    tf.logging.info("Parameter server %d serving.", task_index)
    if threading.current_thread() is threading.main_thread():
      signal.signal(signal.SIGTERM, signal.SIG_DFL)  # join() never returns to Python: SIGTERM ends it
    server.join()
    return None
  if opts.gradient_clipping not in GRADIENT_CLIPPING:
    raise InputError("--gradient_clipping=%r: expected one of %s"
                     % (opts.gradient_clipping, ", ".join(GRADIENT_CLIPPING)))
  if opts.pred_loss not in kd_losses.PRED_LOSSES:
    raise InputError("--pred_loss=%r: expected one of %s" % (opts.pred_loss, ", ".join(kd_losses.PRED_LOSSES)))
  if model_flags["model_type"] == "teacher" and config.frames_read(model_flags):
    tf.logging.warning("--model_type=teacher with --k_frame=%d < --max_frames: a %d-frame model in "
                       "scope teacher/ (the seed's student stage); --model_type=student is clearer.",
                       model_flags["k_frame"], model_flags["k_frame"])
  teacher_checkpoint, teacher_flags, cache = _teacher_setup(opts, model_flags)
  latest = _check_train_dir(opts, chief)
  if latest and chief:
    config.check_model_flags(opts.train_dir, model_flags)
    if model_flags["model_type"] == "kd":
      _check_kd_resume(opts, latest, teacher_checkpoint)

  target, worker_device = "", ""
  if cluster is not None:
    server = tf.train.Server(cluster, job_name=task_type, task_index=task_index)
    target, worker_device = server.target, "/job:%s/task:%d" % (task_type, task_index)

  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(opts.seed)
    local_scopes = ("teacher/",) if teacher_checkpoint and cache is None else ()
    devices = [tower_placement(device, worker_device, cluster, local_scopes)
               for device in tower_devices(opts.num_gpu, worker_device)]
    device_fn = (tf.train.replica_device_setter(worker_device=worker_device, cluster=cluster)
                 if cluster is not None else None)
    with tf.device(device_fn):
      with tf.device("%s/device:CPU:0" % worker_device):
        batch, iterator_init, files, reader = _input_batch(opts, model_flags, teacher_flags,
                                                           len(devices), cache)
      fetch = build_training_graph(model_flags, opts, batch, devices, teacher_flags)
      saver = tf.train.Saver(tf.global_variables(), max_to_keep=opts.keep_checkpoint_max,
                             keep_checkpoint_every_n_hours=opts.keep_checkpoint_every_n_hours,
                             save_relative_paths=True)
      teacher_saver, init_fn = (teacher_savers(teacher_checkpoint, teacher_flags,
                                               opts.student_init_from_teacher, cache is None)
                                if teacher_checkpoint else (None, None))
      summary_op = tf.summary.merge_all()
      global_init = tf.global_variables_initializer()
      local_init = tf.group(tf.local_variables_initializer(), iterator_init)
      ready = tf.report_uninitialized_variables(tf.global_variables())
      variables_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                                        for v in tf.global_variables() if v.dtype.base_dtype.is_floating])
    graph.finalize()

  # The chief owns train_dir from here on; nothing was written before (a refused run leaves no trace).
  lock = utils.DirLock(opts.train_dir).acquire() if chief else None
  try:
    if chief:
      config.write_model_flags(opts.train_dir, model_flags)
      if teacher_checkpoint:
        utils.write_json_atomic(os.path.join(opts.train_dir, KD_TEACHER_FILE),
                                {"teacher_checkpoint": teacher_checkpoint,
                                 "teacher_cache": cache.cache_dir if cache else None})
    session_manager = tf.train.SessionManager(local_init_op=local_init, ready_op=ready,
                                              ready_for_local_init_op=ready, graph=graph,
                                              recovery_wait_secs=1)
    # A worker talks to the parameter servers and itself only, so it neither waits for nor depends on
    # the other workers (which may have finished already).
    session_config = tf.ConfigProto(
        allow_soft_placement=True,
        device_filters=["/job:ps", worker_device] if cluster is not None else None)
    sess = None
    if chief and cluster is not None:
      sess, latest = _continue_from_parameter_servers(session_manager, target, session_config,
                                                      fetch["global_step"], latest)
    if sess is None and chief:
      sess = session_manager.prepare_session(target, init_op=global_init, saver=saver,
                                             checkpoint_dir=opts.train_dir if latest else None,
                                             init_fn=init_fn, config=session_config)
    elif sess is None:
      sess = session_manager.wait_for_session(target, config=session_config)
    if teacher_saver is not None:
      teacher_saver.restore(sess, teacher_checkpoint)
      tf.logging.info("Teacher restored from %s (frozen, %s mode).", teacher_checkpoint,
                      "training" if opts.kd_teacher_is_training else "inference")
    elif cache is not None:
      tf.logging.info("Teacher outputs read from %s; no teacher graph.", cache.describe())
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  fetch = dict(fetch, num_frames=batch["num_frames"])
  return TrainingRun(sess=sess, graph=graph, opts=opts, fetch=fetch, saver=saver, lock=lock,
                     summary_op=summary_op, chief=chief, files=files, resumed_from=latest,
                     model_flags=model_flags, teacher_checkpoint=teacher_checkpoint, cluster=cluster,
                     variables_finite=variables_finite, reader=reader)


def _continue_from_parameter_servers(session_manager, target, session_config, global_step, latest):
  """A restarted chief whose parameter servers still hold the model (other workers kept training)
  continues from their state: restoring `latest` would roll back every update made since. Returns
  (session or None when the variables are uninitialised, what the run resumes from)."""
  try:
    sess = session_manager.wait_for_session(target, config=session_config, max_wait_secs=0)
  except tf.errors.DeadlineExceededError:
    return None, latest
  state = "the parameter servers' live state"
  tf.logging.info("Variables already initialised on the parameter servers: continuing from %s at "
                  "global step %d%s.", state, sess.run(global_step),
                  " (%s not restored: older)" % latest if latest else "")
  return sess, state


def train(opts):
  """Runs training from a flag object (absl FLAGS or any object with the same attributes); returns
  the final global step."""
  run = prepare(opts)
  if run is None:
    return None
  try:
    return train_loop(run)
  finally:
    run.close()


class Diverged(InputError):
  """Training produced a non-finite loss or variable: it stops without saving."""


def _non_finite_term(losses):
  """Name and value of the first loss term (ce, pred, rep, regularization, ...) that is not finite."""
  for name in sorted(losses):
    if not np.isfinite(losses[name]):
      return name, losses[name]
  return None


def train_loop(run):
  """Runs steps until max_steps, the end of the epochs or Ctrl-C/SIGTERM, then checkpoints. Stops
  without saving on a non-finite loss term or variable (Diverged): the newest checkpoint stays finite.
  A data error (InputError) says what the checkpoint written on the way out covers."""
  sess, opts, fetch, saver, chief, files = run.sess, run.opts, run.fetch, run.saver, run.chief, run.files
  summary_op, resumed_from = run.summary_op, run.resumed_from
  writer = tf.summary.FileWriter(opts.train_dir, sess.graph if chief else None) if chief else None
  checkpoint_path = os.path.join(opts.train_dir, "model.ckpt")
  step = sess.run(fetch["global_step"])
  tf.logging.info("%s at step %d; training on %d file(s).",
                  "Resumed from %s" % resumed_from if resumed_from else "New model", step, len(files))
  if opts.max_steps and step >= opts.max_steps:
    tf.logging.info("Global step %d already reached --max_steps=%d.", step, opts.max_steps)
  last_saved_step, last_save_time = step, time.time()
  run_fetch = {k: v for k, v in fetch.items() if k in ("train_op", "global_step", "losses", "num_frames")}
  log_fetch = {k: v for k, v in fetch.items() if k not in ("gradients", "learning_rate")}
  local_steps = 0                      # steps run by this worker (the global step counts all workers)
  window_start, window_local = time.time(), 0
  videos, empty_videos = 0, 0

  def newest():
    return tf.train.latest_checkpoint(opts.train_dir) or "none"

  def save(step):
    if not sess.run(run.variables_finite):
      raise Diverged("training diverged: the update of global step %d made the model's variables "
                     "non-finite; nothing was saved (newest checkpoint: %s, the last finite one); "
                     "lower --base_learning_rate or --clip_gradient_norm" % (step, newest()))
    saver.save(sess, checkpoint_path, global_step=step)
    tf.logging.info("Checkpoint %s-%d written.", checkpoint_path, step)

  reason, data_error = "the end of the training data (--num_epochs=%d)" % opts.num_epochs, None
  try:
    while not (opts.max_steps and step >= opts.max_steps):
      logging_now = (local_steps + 1) % opts.log_every_steps == 0
      summarizing = chief and (local_steps + 1) % opts.summary_every_steps == 0
      this_fetch = log_fetch if logging_now else run_fetch
      if summarizing:
        this_fetch = dict(this_fetch, summary=summary_op)
      values = sess.run(this_fetch)
      local_steps += 1
      step = values["global_step"]
      bad = _non_finite_term(values["losses"])
      if bad:
        raise Diverged("training diverged: loss term %r is %s at global step %d; stopped without "
                       "saving (newest checkpoint: %s, the last finite one); lower "
                       "--base_learning_rate or --clip_gradient_norm" % (bad + (step, newest())))
      empty = int(np.sum(values["num_frames"] == 0))
      if empty and not empty_videos:
        tf.logging.warning("The training data has videos with 0 frames (%d in the batch of global step "
                           "%d): they are trained on as inputs without frames; the count is given "
                           "when training stops.", empty, step)
      videos, empty_videos = videos + len(values["num_frames"]), empty_videos + empty
      if summarizing:
        writer.add_summary(values["summary"], step)
      if logging_now:
        elapsed = max(time.time() - window_start, 1e-9)
        steps_per_sec = (local_steps - window_local) / elapsed
        examples_per_sec = len(values["labels"]) * steps_per_sec
        eta = (opts.max_steps - step) / steps_per_sec if opts.max_steps else None
        _log_and_summarize(values, step, opts, writer, examples_per_sec, eta)
        window_start, window_local = time.time(), local_steps
      if chief and (step - last_saved_step >= opts.export_model_steps or
                    time.time() - last_save_time >= 60 * opts.save_checkpoint_minutes):
        save(step)
        last_saved_step, last_save_time = step, time.time()
    reason = "--max_steps=%d" % opts.max_steps
  except tf.errors.OutOfRangeError:
    pass
  except KeyboardInterrupt as interrupt:
    reason = "SIGTERM" if isinstance(interrupt, utils.Terminated) else "Ctrl-C"
  except Diverged:
    raise
  except tf.errors.OpError as error:
    data_error = readers.explain_data_error(error, files, run.reader)
    if data_error is None:
      if chief and step > last_saved_step:
        save(step)
      raise
  except BaseException:
    if chief and step > last_saved_step:
      save(step)
    raise
  saved = chief and step > last_saved_step
  if saved:
    save(step)
  if data_error is not None:
    raise InputError("%s; training stopped at global step %d%s" % (data_error, step, (
        ": %s-%d was written and covers only the data read before this record (fix or remove the "
        "file and rerun to resume from it, or start anew in another --train_dir)" % (checkpoint_path, step))
        if saved else " (no checkpoint written since step %d)" % last_saved_step))
  tf.logging.info("Training stopped at global step %d (%s); %d steps run by this %s%s.", step, reason,
                  local_steps, "process" if run.cluster is None else "worker",
                  "; %d of its %d videos had 0 frames" % (empty_videos, videos) if empty_videos else "")
  if writer is not None:
    writer.close()
  return step


def main(argv):
  """Entry point: parses argv (in-process callers pass their own), trains, returns the final step."""
  FLAGS.unparse_flags()
  FLAGS(argv)
  utils.setup_logging()
  return train(FLAGS)


if __name__ == "__main__":
  tf.disable_v2_behavior()
  utils.run_cli(main, sys.argv)
