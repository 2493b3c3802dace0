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

import checkpoints
import config
import eval_util
import kd_losses
import kd_teacher
import model_utils
import precision
import readers
import utils
from utils import InputError

flags = tf.flags
FLAGS = flags.FLAGS

# The data, model and role flags, --train_dir and --teacher_checkpoint are config.py's.
flags.DEFINE_string("train_data_pattern", "", "Glob(s) of training shards, comma-separated.")
flags.DEFINE_bool("start_new_model", False,
                  "Start from scratch; refused if --train_dir already holds checkpoints.")
config.define_float("base_learning_rate", 0.01, "Initial learning rate.", lambda v: v > 0,
                    "a positive rate")
config.define_float("learning_rate_decay", 0.95, "Learning rate factor per decay period.",
                    lambda v: 0 < v <= 1, "a factor in (0, 1]")
config.define_float("learning_rate_decay_examples", 4000000, "Examples per decay period (staircase).",
                    lambda v: v > 0, "a positive number of examples")
flags.DEFINE_integer("num_epochs", 5, "Passes over the training data (0: no limit).", lower_bound=0)
flags.DEFINE_integer("max_steps", 0, "Stop at this global step (0: no limit).", lower_bound=0)
flags.DEFINE_alias("max_step", "max_steps")
flags.DEFINE_integer("export_model_steps", 1000, "Checkpoint every this many steps.", lower_bound=1)
config.define_float("save_checkpoint_minutes", 10.0, "Also checkpoint every this many minutes.",
                    lambda v: v > 0, "a positive number of minutes")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Most recent checkpoints kept.", lower_bound=0)
config.define_float("keep_checkpoint_every_n_hours", 10000.0, "Also keep one checkpoint per this many hours.",
                    lambda v: v > 0, "a positive number of hours")
config.define_float("clip_gradient_norm", 1.0, "Clip gradients to this norm (0: no clipping).",
                    lambda v: v >= 0, "0 (off) or a positive number")
config.define_float("regularization_penalty", 1.0, "Weight of the models' L2 regularisation losses.",
                    lambda v: v >= 0, "0 (off) or a positive number")
flags.DEFINE_integer("num_gpu", 1, "Towers: one per GPU. Without GPUs one tower runs on the CPU.",
                     lower_bound=0)
flags.DEFINE_string("visible_gpu", "", "CUDA_VISIBLE_DEVICES for this process (the seed's flag).")
flags.DEFINE_integer("log_every_steps", 10, "Log loss, examples/sec and ETA every this many steps.",
                     lower_bound=1)
flags.DEFINE_integer("summary_every_steps", 10, "Write TensorBoard summaries every this many steps.",
                     lower_bound=1)
flags.DEFINE_integer("shuffle_buffer", 2048, "Videos in the training shuffle buffer.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Graph-level random seed (initialisation, shuffling, random frames).")
# Distillation (--model_type=kd; --teacher_cache is config.py's); the teacher's side is kd_teacher.py, the
# loss terms kd_losses.py.
flags.DEFINE_enum("kd_mode", "serial", ["serial", "parallel"],
                  "serial: frozen pre-trained teacher; parallel: teacher trained on its own L_CE in the "
                  "same run.", case_sensitive=False)
config.define_float("ce_weight", 1.0, "Weight of L_CE (kd).", lambda v: v >= 0, "0 (off) or a positive number")
config.define_float("pred_weight", 0.8, "Weight of L_pred, a batch mean (the seed's 0.01 per batch of 80).",
                    lambda v: v >= 0, "0 (off) or a positive number")
config.define_float("rep_weight", 0.08, "Weight of L_rep, a batch mean (the seed's 0.001 per batch of 80).",
                    lambda v: v >= 0, "0 (off) or a positive number")
flags.DEFINE_enum("pred_loss", "mse", list(kd_losses.PRED_LOSSES),
                  "L_pred: mse on probabilities (paper) or kl on soft targets.", case_sensitive=False)
config.define_float("temperature", 1.0, "Temperature of --pred_loss=kl.", lambda v: v > 0,
                    "a positive temperature")
flags.DEFINE_bool("kd_balance", False,
                  "Weight L_pred and L_rep relative to L_CE: each term's loss is its weight times L_CE at "
                  "every step (kd_losses.distillation_loss), free of the representation's scale and size "
                  "and of the number of classes.")
flags.DEFINE_enum("rep_loss", "mse", list(kd_losses.REP_LOSSES),
                  "L_rep: mse (the paper's and the seed's squared error), cosine (1 - cosine similarity) "
                  "or relative (squared error / the teacher's squared norm); the last two do not grow with "
                  "the representation's size or scale.", case_sensitive=False)
flags.DEFINE_bool("student_init_from_teacher", False, "Start the student from the teacher's weights.")
flags.DEFINE_bool("share_teacher_classifier", False,
                  "Serial kd: start the student's classifier from the teacher's (the paper's shared "
                  "output layer; the paper's code trains its own). Needs representations of one size.")


@flags.multi_flags_validator(["model_type", "ce_weight", "pred_weight", "rep_weight"])
def _kd_trains_on_something(values):
  if values["model_type"] == "kd" and not (values["ce_weight"] or values["pred_weight"] or
                                           values["rep_weight"]):
    raise flags.ValidationError("--ce_weight, --pred_weight and --rep_weight are all 0: nothing to "
                                "train on")
  return True


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
  `local_scopes` (a serial KD teacher, the float16 loss scale), which every worker keeps on its own CPU."""
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


def clip_gradients(grads_and_vars, max_norm, mode):
  """per_variable (the seed's): each gradient g becomes g * max_norm / max(||g||, max_norm);
  global: every gradient scaled by max_norm / max(global norm, max_norm). max_norm <= 0: unchanged."""
  if max_norm <= 0:
    return grads_and_vars
  if mode == "per_variable":
    return [(tf.clip_by_norm(g, max_norm) if g is not None else None, v) for g, v in grads_and_vars]
  clipped, _ = tf.clip_by_global_norm([g for g, _ in grads_and_vars], max_norm)
  return [(c, v) for c, (_, v) in zip(clipped, grads_and_vars)]


def build_training_graph(model_flags, opts, batch, devices, teacher=kd_teacher.NO_TEACHER):
  """Towers, losses, averaged gradients and the train op. Returns a dict of tensors to run."""
  global_step = tf.train.get_or_create_global_step()
  num_towers = len(devices)
  examples = tf.cast(global_step, tf.float32) * float(opts.batch_size * num_towers)
  learning_rate = tf.train.exponential_decay(opts.base_learning_rate, examples,
                                             opts.learning_rate_decay_examples,
                                             opts.learning_rate_decay, staircase=True)
  optimizer = tf.train.AdamOptimizer(learning_rate)
  with tf.device(devices[0]):  # a worker's own (local variables, not checkpointed)
    scaling = precision.loss_scale(model_flags.get("mixed_precision", "none"))   # prepare() sets it
  kd = model_flags["model_type"] == "kd"
  parallel = kd and opts.kd_mode == "parallel"
  splits = {key: tf.split(value, num_towers) for key, value in batch.items() if key != "video_ids"}
  label_loss = model_utils.label_loss(model_flags)
  scope = config.role_scope(model_flags)

  tower_grads, tower_terms, tower_outputs = [], [], []
  update_ops = []
  for i, device in enumerate(devices):
    with tf.device(device), tf.name_scope("tower_%d" % i) as name_scope:
      tower_batch = {key: value[i] for key, value in splits.items()}
      labels = tower_batch["labels"]
      student = model_utils.build_model(model_flags, tower_batch["video_matrix"],
                                        tower_batch["num_frames"], is_training=True, scope=scope)
      ce = model_utils.training_label_loss(label_loss, student, labels)
      terms = {"ce": ce}
      loss = ce
      teacher_outputs = None
      if kd:
        teacher_outputs = kd_teacher.tower_outputs(teacher, opts, tower_batch)
        matched = kd_teacher.matched_student(teacher_outputs, student, model_flags, opts.rep_weight)
        loss, terms = kd_losses.distillation_loss(ce, teacher_outputs, matched, opts.ce_weight,
                                                  opts.pred_weight, opts.rep_weight,
                                                  opts.pred_loss, opts.temperature, opts.rep_loss,
                                                  opts.kd_balance)
        if parallel:
          terms["teacher_ce"] = model_utils.training_label_loss(label_loss, teacher_outputs, labels)
          loss += terms["teacher_ce"]
      # A frozen teacher's penalty is a constant: it stays out of the student's loss and its summaries.
      # The seed's KD loss has no L2 term for the student either (--kd_regularization adds it).
      student_penalty = not kd or model_flags["kd_regularization"]
      regularization = [r for r in tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES, name_scope)
                        if (parallel if kd and r.name.startswith(name_scope + "teacher/")
                            else student_penalty)]
      if regularization:
        terms["regularization"] = tf.add_n(regularization)
        loss += opts.regularization_penalty * terms["regularization"]
      terms["total"] = loss
      tower_grads.append(optimizer.compute_gradients(scaling.scaled(loss), var_list=tf.trainable_variables(),
                                                     colocate_gradients_with_ops=True))
      tower_terms.append(terms)
      tower_outputs.append((student["predictions"],
                            teacher_outputs["predictions"] if teacher_outputs is not None else None))
      if i == 0:  # Batch-norm statistics: updated once per step, from the first tower's batch.
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS, name_scope)

  grads = clip_gradients(scaling.unscaled(average_gradients(tower_grads)), opts.clip_gradient_norm,
                         model_flags["gradient_clipping"])
  with tf.control_dependencies(update_ops):
    train_op, applied = scaling.apply(lambda: optimizer.apply_gradients(grads, global_step=global_step), grads)

  losses = {name: tf.add_n([t[name] for t in tower_terms]) / num_towers for name in tower_terms[0]}
  if applied is not None:  # float16: the loss scale S of the step, and whether its update was applied
    losses["loss_scale"] = scaling.current
  for name, value in losses.items():
    tf.summary.scalar("loss/" + name if name != "total" else "loss", value)
  tf.summary.scalar("learning_rate", learning_rate)
  fetch = {"train_op": train_op, "global_step": global_step, "losses": losses,
           "learning_rate": learning_rate, "labels": batch["labels"], "gradients": grads,
           "predictions": tf.concat([p for p, _ in tower_outputs], 0),
           "num_frames": batch["num_frames"]}
  if kd:
    fetch["teacher_predictions"] = tf.concat([t for _, t in tower_outputs], 0)
  if applied is not None:
    fetch["applied"] = applied
  return fetch


def _input_batch(opts, model_flags, teacher, num_towers):
  """Training batches; in KD mode the live teacher's frames (per its own flags) ride along, or with a
  teacher cache its outputs (the student's k frames are then the only frames read). Returns
  (batch, iterator initialiser, files, reader)."""
  live = kd_teacher.is_live(teacher)
  reader = model_utils.make_reader(model_flags,
                                   also_full_frames=live and config.frames_read(teacher.flags) is None,
                                   seed=opts.seed)
  files = readers.resolve_files(opts.train_data_pattern, "--train_data_pattern")
  _warn_if_strided_reads_padding(model_flags, files)
  batch, init = reader.input_batch(files, opts.batch_size * num_towers, training=True,
                                   num_readers=opts.num_readers,
                                   num_epochs=opts.num_epochs or None,
                                   shuffle_buffer=opts.shuffle_buffer, seed=opts.seed,
                                   teacher_cache=teacher.cache)
  if live:
    kd_teacher.teacher_frames(teacher, model_flags, batch)
  return batch, init, files, reader


STRIDED_PADDING_WARNING = 0.2   # share of sampled training videos


def _warn_if_strided_reads_padding(model_flags, files):
  """--frame_sampling=strided reads fixed positions of the padded window: one warning line when more
  than STRIDED_PADDING_WARNING of the training videos (a sample of the first 512) are shorter than the
  last position, so that their student reads padding there."""
  k = config.frames_read(model_flags)
  if not k or model_flags["frame_sampling"] != "strided" or any("://" in f for f in files):
    return
  lengths = readers.video_lengths(files, model_flags["feature_names"][0])
  share, last = readers.strided_padding_share(lengths, k, model_flags["max_frames"])
  if share > STRIDED_PADDING_WARNING:
    tf.logging.warning("--frame_sampling=strided reads positions 0:%d:%d, up to frame %d: %.0f%% of %d "
                       "training videos sampled are shorter, so the student reads padding at some of "
                       "its %d positions (the seed's sampling); --frame_sampling=uniform spreads the k "
                       "frames over each video's own frames", model_flags["max_frames"],
                       max(model_flags["max_frames"] // k, 1), last, 100 * share, len(lengths),
                       len(readers.strided_positions(k, model_flags["max_frames"])))


def _check_train_dir(opts, chief):
  """The checkpoint the chief resumes from: the newest intact one of train_dir (checkpoints.choose;
  InputError if none is left), or None for a new model and on the other workers. --start_new_model
  is refused where train_dir lists checkpoints. Changes nothing."""
  listed = checkpoints.listed(opts.train_dir) if chief else []
  if not listed:
    return None
  if opts.start_new_model:
    raise InputError("--train_dir=%s already holds %s: pass --start_new_model=False to resume it, or "
                     "choose a new --train_dir (nothing is deleted)" % (opts.train_dir, listed[-1]))
  return checkpoints.choose(opts.train_dir, "--train_dir")


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


class Cluster(object):
  """Where this process trains: `spec` (a ClusterSpec, None when not distributed), its task, whether it
  is the chief, and, once its server runs, the session `target` and this task's `worker_device`."""

  def __init__(self, spec, task_type, task_index):
    self.spec, self.task_type, self.task_index = spec, task_type, task_index
    self.chief = is_chief(spec, task_type, task_index)
    self.target, self.worker_device = "", ""

  def start_server(self):
    if self.spec is not None:
      server = tf.train.Server(self.spec, job_name=self.task_type, task_index=self.task_index)
      self.target = server.target
      self.worker_device = "/job:%s/task:%d" % (self.task_type, self.task_index)


class TrainingGraph(object):
  """The training graph, finalised, and what opening a session over it needs."""

  def __init__(self, graph, fetch, saver, teacher_saver, init_fn, summary_op, global_init, local_init,
               ready, variables_finite, files, reader):
    self.graph = graph                        # tf.Graph, finalised
    self.fetch = fetch                        # build_training_graph's dict of tensors
    self.saver = saver                        # the run's checkpoints (every global variable)
    self.teacher_saver = teacher_saver        # restores a live serial KD teacher, or None
    self.init_fn = init_fn                    # --student_init_from_teacher, or None
    self.summary_op = summary_op
    self.global_init, self.local_init, self.ready = global_init, local_init, ready
    self.variables_finite = variables_finite  # scalar bool: every float variable finite
    self.files, self.reader = files, reader   # the training shards and their reader


def build_graph(opts, model_flags, teacher, cluster):
  """The whole training graph of this process: input, towers, savers, initialisers."""
  graph = tf.Graph()
  worker_device = cluster.worker_device
  with graph.as_default():
    tf.set_random_seed(opts.seed)
    local_scopes = kd_teacher.local_scopes(teacher) + (precision.DynamicLossScale.SCOPE + "/",)
    devices = [tower_placement(device, worker_device, cluster.spec, local_scopes)
               for device in tower_devices(opts.num_gpu, worker_device)]
    device_fn = (tf.train.replica_device_setter(worker_device=worker_device, cluster=cluster.spec)
                 if cluster.spec is not None else None)
    with tf.device(device_fn):
      with tf.device("%s/device:CPU:0" % worker_device):
        batch, iterator_init, files, reader = _input_batch(opts, model_flags, teacher, len(devices))
      fetch = build_training_graph(model_flags, opts, batch, devices, teacher)
      saver = tf.train.Saver(tf.global_variables(), max_to_keep=opts.keep_checkpoint_max,
                             keep_checkpoint_every_n_hours=opts.keep_checkpoint_every_n_hours,
                             save_relative_paths=True)
      teacher_saver, init_fn = kd_teacher.savers(teacher, opts.student_init_from_teacher,
                                                 opts.share_teacher_classifier)
      parts = TrainingGraph(
          graph, fetch, saver, teacher_saver, init_fn, summary_op=tf.summary.merge_all(),
          global_init=tf.global_variables_initializer(),
          local_init=tf.group(tf.local_variables_initializer(), iterator_init),
          ready=tf.report_uninitialized_variables(tf.global_variables()),
          variables_finite=tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                                          for v in tf.global_variables() if v.dtype.base_dtype.is_floating]),
          files=files, reader=reader)
    graph.finalize()
  return parts


def open_session(opts, parts, cluster, latest, mixed_precision="none"):
  """A session over the graph: initialised, restored from `latest` (the chief: the checkpoint
  _check_train_dir chose), continued from live parameter servers (a restarted distributed chief) or
  waited for (other workers); the live teacher restored. Returns (session, what the run resumes from)."""
  session_manager = tf.train.SessionManager(local_init_op=parts.local_init, ready_op=parts.ready,
                                            ready_for_local_init_op=parts.ready, graph=parts.graph,
                                            recovery_wait_secs=1)
  # A worker talks to the parameter servers and itself only, so it neither waits for nor depends on
  # the other workers (which may have finished already).
  session_config = precision.session_config(
      mixed_precision, allow_soft_placement=True,
      device_filters=["/job:ps", cluster.worker_device] if cluster.spec is not None else None)
  sess = None
  if cluster.chief and cluster.spec is not None:
    sess, latest = _continue_from_parameter_servers(session_manager, cluster.target, session_config,
                                                    parts.fetch["global_step"], latest)
  if sess is None and cluster.chief:
    sess = session_manager.prepare_session(cluster.target, init_op=parts.global_init, saver=parts.saver,
                                           checkpoint_filename_with_path=latest,
                                           init_fn=parts.init_fn, config=session_config)
    if latest:  # the retention (--keep_checkpoint_max) goes on counting the listed checkpoints
      parts.saver.recover_last_checkpoints(checkpoints.listed(opts.train_dir))
  elif sess is None:
    sess = session_manager.wait_for_session(cluster.target, config=session_config)
  return sess, latest


class TrainingRun(object):
  """A prepared run: the graph's parts, its open session and what the loop needs to know."""

  def __init__(self, opts, model_flags, parts, sess, cluster, lock, resumed_from, teacher):
    self.opts = opts                  # the flags (absl FLAGS or an object with their attributes)
    self.model_flags = model_flags    # what model_flags.json records
    self.parts = parts                # TrainingGraph
    self.sess = sess
    self.cluster = cluster            # Cluster
    self.lock = lock                  # utils.DirLock held on train_dir by the chief, or None
    self.resumed_from = resumed_from  # checkpoint path, "the parameter servers' live state" or None
    self.teacher = teacher            # kd_teacher.Teacher

  def close(self):
    """Closes the session and releases the train_dir lock."""
    self.sess.close()
    if self.lock is not None:
      self.lock.release()


def prepare(opts):
  """Checks the flags and files, builds the graph, opens the session. None for a parameter server
  (which serves until killed)."""
  if opts.visible_gpu:
    os.environ["CUDA_VISIBLE_DEVICES"] = str(opts.visible_gpu)
  model_flags = model_utils.model_flags_from(opts.flag_values_dict() if hasattr(opts, "flag_values_dict")
                                             else vars(opts))
  model_flags["mixed_precision"] = precision.resolve(opts.mixed_precision)
  cluster = Cluster(*cluster_from_tf_config())
  if cluster.task_type == "ps":
    server = tf.train.Server(cluster.spec, job_name="ps", task_index=cluster.task_index)
    tf.logging.info("Parameter server %d serving.", cluster.task_index)
    if threading.current_thread() is threading.main_thread():
      signal.signal(signal.SIGTERM, signal.SIG_DFL)  # join() never returns to Python: SIGTERM ends it
    server.join()
    return None
  if model_flags["model_type"] == "teacher" and config.frames_read(model_flags):
    tf.logging.warning("--model_type=teacher with --k_frame=%d < --max_frames: a %d-frame model in "
                       "scope teacher/ (the seed's student stage); --model_type=student is clearer.",
                       model_flags["k_frame"], model_flags["k_frame"])
  teacher = kd_teacher.setup(opts, model_flags)
  latest = _check_train_dir(opts, cluster.chief)
  if latest and cluster.chief:
    config.check_model_flags(opts.train_dir, model_flags)
    if model_flags["model_type"] == "kd":
      kd_teacher.check_resume(opts, latest, teacher)
  cluster.start_server()
  parts = build_graph(opts, model_flags, teacher, cluster)

  # The chief owns train_dir from here on; nothing was written before (a refused run leaves no trace).
  lock = utils.DirLock(opts.train_dir).acquire() if cluster.chief else None
  try:
    if cluster.chief:
      if latest:  # the damaged checkpoints passed over go out of the way of the new ones
        checkpoints.set_aside(opts.train_dir, latest)
      config.write_model_flags(opts.train_dir, model_flags)
      kd_teacher.write_record(opts.train_dir, teacher)
    sess, resumed_from = open_session(opts, parts, cluster, latest, model_flags["mixed_precision"])
    kd_teacher.log_restore(sess, parts.teacher_saver, teacher, opts)
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  return TrainingRun(opts, model_flags, parts, sess, cluster, lock, resumed_from, teacher)


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


class WriteFailed(InputError):
  """A checkpoint could not be written (a full disk, ...): training stops; the message names the
  newest intact checkpoint, which a rerun resumes from."""


def _non_finite_term(losses):
  """Name and value of the first loss term (ce, pred, rep, regularization, ...) that is not finite."""
  for name in sorted(losses):
    if not np.isfinite(losses[name]):
      return name, losses[name]
  return None


def train_loop(run):
  """Runs steps until max_steps, the end of the epochs or Ctrl-C/SIGTERM, then checkpoints. Stops
  without saving on a non-finite loss term or variable (Diverged): the newest checkpoint stays finite.
  A failed checkpoint write (WriteFailed) stops it, naming the checkpoint a rerun resumes from. A data
  error (InputError) says what the checkpoint written on the way out covers."""
  sess, opts, parts, chief = run.sess, run.opts, run.parts, run.cluster.chief
  fetch, saver, files, summary_op = parts.fetch, parts.saver, parts.files, parts.summary_op
  writer = tf.summary.FileWriter(opts.train_dir, sess.graph if chief else None) if chief else None
  checkpoint_path = os.path.join(opts.train_dir, "model.ckpt")
  step = sess.run(fetch["global_step"])
  tf.logging.info("%s at step %d; training on %d file(s).",
                  "Resumed from %s" % run.resumed_from if run.resumed_from else "New model", step, len(files))
  if opts.max_steps and step >= opts.max_steps:
    tf.logging.info("Global step %d already reached --max_steps=%d.", step, opts.max_steps)
  last_saved_step, last_save_time = step, time.time()
  run_fetch = {k: v for k, v in fetch.items() if k in ("train_op", "global_step", "losses", "num_frames",
                                                            "applied")}
  log_fetch = {k: v for k, v in fetch.items() if k not in ("gradients", "learning_rate")}
  local_steps = 0                      # steps run by this worker (the global step counts all workers)
  window_start, window_local = time.time(), 0
  videos, empty_videos = 0, 0

  def newest():
    return tf.train.latest_checkpoint(opts.train_dir) or "none"

  def save(step):
    if not sess.run(parts.variables_finite):
      raise Diverged("training diverged: the update of global step %d made the model's variables "
                     "non-finite; nothing was saved (newest checkpoint: %s, the last finite one); "
                     "lower --base_learning_rate or --clip_gradient_norm" % (step, newest()))
    try:
      saver.save(sess, checkpoint_path, global_step=step)
    except (tf.errors.OpError, OSError) as error:
      intact = checkpoints.newest_intact(opts.train_dir)[0]
      raise WriteFailed("checkpoint write failed at global step %d (%s); %s" % (
          step, utils.error_line(error),
          "the newest intact checkpoint is %s: free space (or fix the cause) and rerun to resume from "
          "it" % intact if intact else "there is no intact checkpoint to resume from: free space (or fix "
          "the cause) and rerun to start anew"))
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
      if not values.get("applied", True) and values["losses"]["loss_scale"] <= precision.DynamicLossScale.MIN_SCALE:
        raise Diverged("training diverged: the float16 gradients after global step %d are not finite even "
                       "at the smallest loss scale (%g); stopped without saving (newest checkpoint: %s); "
                       "lower --base_learning_rate, or train with --mixed_precision=none"
                       % (step, precision.DynamicLossScale.MIN_SCALE, newest()))
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
  except (Diverged, WriteFailed):
    raise
  except tf.errors.OpError as error:
    data_error = readers.explain_data_error(error, files, parts.reader)
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
                  local_steps, "process" if run.cluster.spec is None else "worker",
                  "; %d of its %d videos had 0 frames" % (empty_videos, videos) if empty_videos else "")
  if writer is not None:
    writer.close()
  return step


main = utils.flag_program(train)

if __name__ == "__main__":
  utils.run_cli(main, sys.argv)
