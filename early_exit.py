"""Early exit: a NeXtVLAD student reads its frames in stages and stops at the first stage whose exit
rule holds; the exit gate's training (run as a program).

Stages n_1 < ... < n_S (--exit_stages, default the run's --k_frame_choices): stage s reads the first
n_s frames of one nested order of the video's frames, the uniform-n_S frames (all n when n <= n_S) in
readers.nested_order: each stage's frames as close to its own uniform-n_s frames as nesting allows
(exactly those when n_s divides n_S and the earlier stages' frames are among them: 6 of 30).
NeXtVLAD's aggregation is a sum over frames, so stage s only runs the per-frame layers on its
n_s - n_{s-1} new frames and adds their sums to those of the stages before (nextvlad.nextvlad_sums);
the head (L2 normalisation, batch norms, hidden, gating, classifier) runs once per stage. In inference
mode every frame's terms depend on that frame alone, so the last stage's output equals the model's on
all n_S frames at once. Each stage runs on the videos still reading: those that exit leave the batch.

Exit rules, at stage s < S, on the stage's probabilities p (sigmoid, [C]) and the previous stage's q:
  max_prob           max_c p_c >= threshold
  prediction_change  max_c |p_c - q_c| <= threshold (never at the first stage)
  gate               sigmoid(w_s · f + b_s) >= threshold, f = stage_features(p, q) (GATE_FEATURES)
  none               never (every stage is read)
A video whose frames are all read (n <= n_s) exits at stage s; every video exits at stage S.

Accounting per video: `frames_read` = the video's frames the model consumed, min(n, n_exit);
`macs` = the multiply-adds spent: n_exit · frame_macs (the rows computed, padding of the exit stage
included) + (exit stage + 1) · head_macs (nextvlad.NeXtVLADModel's counts).

The gate is a logistic regression per stage on GATE_FEATURES, fitted after the student:

  python early_exit.py --train_dir=RUN --input_data_pattern='/data/train*.tfrecord' \\
      --exit_stages=6,10,15,20,30 --gate_target=teacher --teacher_cache=TEACHER/cache --gate_beta=0.5

Targets (per video and stage): `teacher`, the teacher agreement: the stage's squared distance to the
cached teacher probabilities Σ_c (p_c - t_c)^2 <= β; `frameexit`, FrameExit's pseudo-label: the
stage's cross-entropy to the labels (summed over classes) <= β·exp(s/2), s = 1..S. It writes
RUN/exit_gate.json, which --exit_rule=gate reads.
"""

import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf

import checkpoints
import config
import frame_level_models
import model_utils
import precision
import readers
import teacher_cache as teacher_cache_lib
import utils
from utils import InputError

flags = tf.flags

flags.DEFINE_enum("gate_target", "teacher", ["teacher", "frameexit"],
                  "Exit gate targets: teacher (the stage's squared distance to the cached teacher's "
                  "probabilities <= --gate_beta; needs --teacher_cache) or frameexit (the stage's label "
                  "cross-entropy <= --gate_beta * exp(s/2), FrameExit's pseudo-label).", case_sensitive=False)
config.define_float("gate_beta", 0.5, "β of --gate_target.", lambda v: v > 0, "a positive number")
flags.DEFINE_integer("gate_batches", 50, "Training batches the gate is fitted on.", lower_bound=1)

GATE_FILE = "exit_gate.json"
GATE_FEATURES = ("max_prob", "entropy", "change")
STAGED_MODELS = ("NeXtVLADModel",)
EPSILON = 1e-7


def stage_features(probabilities, previous=None):
  """[A, C] probabilities (and the previous stage's, None at the first) -> [A, 3]: the top-class
  probability, the mean binary entropy over classes, the largest absolute change since the previous
  stage (0 at the first)."""
  p = tf.clip_by_value(probabilities, EPSILON, 1 - EPSILON)
  entropy = -tf.reduce_mean(p * tf.log(p) + (1 - p) * tf.log(1 - p), axis=1)
  change = (tf.zeros_like(entropy) if previous is None
            else tf.reduce_max(tf.abs(probabilities - previous), axis=1))
  return tf.stack([tf.reduce_max(probabilities, axis=1), entropy, change], axis=1)


def exit_now(rule, threshold, probabilities, previous=None, gate=None):
  """[A] bool: the videos whose exit rule holds at this stage (see the module docstring); `gate` is
  (weights [3], bias) of the stage."""
  count = tf.shape(probabilities)[0]
  if rule == "none" or (rule == "prediction_change" and previous is None):
    return tf.zeros([count], tf.bool)
  if rule == "max_prob":
    return tf.reduce_max(probabilities, axis=1) >= threshold
  if rule == "prediction_change":
    return tf.reduce_max(tf.abs(probabilities - previous), axis=1) <= threshold
  weights, bias = gate
  score = tf.sigmoid(tf.linalg.matvec(stage_features(probabilities, previous),
                                      tf.constant(weights, tf.float32)) + float(bias))
  return score >= threshold


def read_gate(train_dir, stages):
  """RUN/exit_gate.json's per-stage (weights, bias); InputError if it is missing or was fitted for
  other stages."""
  path = os.path.join(train_dir, GATE_FILE)
  if not tf.io.gfile.exists(path):
    raise InputError("--exit_rule=gate: %s not found; fit the gate first (python early_exit.py "
                     "--train_dir=%s ...)" % (path, train_dir))
  gate = utils.read_json(path, "the exit gate early_exit.py writes")
  if gate.get("stages") != list(stages) or gate.get("features") != list(GATE_FEATURES):
    raise InputError("--exit_stages=%s: %s was fitted for stages %s (features %s); pass those or "
                     "fit the gate again" % (",".join(map(str, stages)), path, gate.get("stages"),
                                             gate.get("features")))
  return list(zip(gate["weights"], gate["biases"]))


class Staged(object):
  """The staged student of a run: its reader (nested frame order) and its outputs with early exit."""

  def __init__(self, model_flags, stages, rule="none", threshold=0.5, gate=None):
    if model_flags["model"] not in STAGED_MODELS or not model_flags["frame_features"]:
      raise InputError("--exit_rule/--exit_stages: expected a frame-level %s run (its aggregation is "
                       "a sum over frames), got --model=%s" % (" or ".join(STAGED_MODELS),
                                                                model_flags["model"]))
    if not stages:
      raise InputError("--exit_rule=%s: expected --exit_stages (e.g. 6,10,15,20,30); the run has no "
                       "--k_frame_choices to default to" % rule)
    if stages[-1] > model_flags["max_frames"]:
      raise InputError("--exit_stages=%s: expected at most the run's --max_frames=%d"
                       % (",".join(map(str, stages)), model_flags["max_frames"]))
    if rule == "gate" and (gate is None or len(gate) != len(stages)):
      raise InputError("--exit_rule=gate: expected a gate per stage (%d), got %s"
                       % (len(stages), "none" if gate is None else len(gate)))
    self.model_flags, self.stages, self.rule, self.threshold, self.gate = (
        model_flags, list(stages), rule, float(threshold), gate)
    self.model = model_utils.get_model(model_flags["model"], **model_flags)

  def reader(self):
    """The run's reader of the last stage's n_S frames in nested order."""
    return model_utils.make_reader(self.model_flags, nested_stages=self.stages)

  def stage_outputs(self, video_matrix, num_frames, decide=True):
    """Per stage: (batch indices of the videos it ran on, its outputs dict, [A] bool: they exit).
    video_matrix [B, n_S, D] in nested order, num_frames [B]. `decide=False` runs every stage on
    every video (the gate's training data)."""
    model, vocab = self.model, self.model_flags["num_classes"]
    available = tf.minimum(tf.cast(num_frames, tf.int32), self.stages[-1])
    active = tf.range(tf.shape(video_matrix)[0])
    sums = previous = None
    results, start = [], 0
    with model_utils.model_scope(self.model_flags):
      for s, end in enumerate(self.stages):
        real = tf.gather(available, active)
        frames = frame_level_models.preprocess(
            tf.gather(video_matrix[:, start:end], active), model.input_preprocessing,
            model.feature_sizes, model.eigenvals_path)
        mask = tf.sequence_mask(tf.clip_by_value(real - start, 0, end - start), end - start,
                                dtype=tf.float32)
        new = model.branch_sums(frames, mask)                                  # the new frames only
        sums = new if sums is None else [(w + nw, m + nm, c) for (w, m, c), (nw, nm, _) in zip(sums, new)]
        outputs = model.head(model.vlads(sums), vocab, is_training=False)
        probabilities = outputs["predictions"]
        if s == len(self.stages) - 1:
          done = tf.ones_like(real, tf.bool)
        else:
          done = (real <= end) | exit_now(self.rule, self.threshold, probabilities, previous,
                                          self.gate[s] if self.gate else None)
        results.append((active, outputs, done))
        if decide:
          keep = tf.logical_not(done)
          active, probabilities = tf.boolean_mask(active, keep), tf.boolean_mask(probabilities, keep)
          sums = [(tf.boolean_mask(w, keep), tf.boolean_mask(m, keep), c) for w, m, c in sums]
        previous, start = probabilities, end
    return results

  def outputs(self, video_matrix, num_frames):
    """The model's outputs at each video's exit stage (`predictions`, `logits`, `representation`)
    and per video `exit_stage` (0-based), `frames_read` and `macs` (int64); see the module docstring."""
    results = self.stage_outputs(video_matrix, num_frames)
    indices = [tf.boolean_mask(active, done) for active, _, done in results]
    merged = {key: tf.dynamic_stitch(indices, [tf.boolean_mask(outputs[key], done)
                                               for _, outputs, done in results])
              for key in ("predictions", "logits", "representation")}
    stage = tf.dynamic_stitch(indices, [tf.fill(tf.shape(i), s) for s, i in enumerate(indices)])
    rows = tf.gather(tf.constant(self.stages, tf.int64), stage)
    available = tf.minimum(tf.cast(num_frames, tf.int64), self.stages[-1])
    head = self.model.head_macs(self.model_flags["num_classes"])
    merged.update(exit_stage=stage, frames_read=tf.minimum(available, rows),
                  macs=rows * self.model.frame_macs() + (tf.cast(stage, tf.int64) + 1) * head)
    return merged


def staged_from_flags(model_flags, opts, train_dir):
  """The Staged of --exit_rule / --exit_threshold / --exit_stages (or the run's k_frame_choices), or
  None when neither a rule nor stages are given."""
  stages = config.int_list(opts.exit_stages, "exit_stages") or model_flags["k_frame_choices"]
  if opts.exit_rule == "none" and not opts.exit_stages:
    return None
  gate = read_gate(train_dir, stages) if opts.exit_rule == "gate" else None
  return Staged(model_flags, stages, opts.exit_rule, opts.exit_threshold, gate)


class FrameCount(object):
  """Frames read and multiply-adds spent per video, accumulated batch by batch (eval, inference)."""

  def __init__(self, bins):
    self.bins = bins         # upper edges of the histogram's bins (the stages, or k); None: every count
    self.frames, self.macs = [], []

  def add(self, frames_read, macs):
    self.frames.extend(np.asarray(frames_read).tolist())
    self.macs.extend(np.broadcast_to(macs, np.shape(frames_read)).tolist())

  def summary(self):
    """frames_read_mean, _median, _histogram ({"a-b": videos with a..b frames}), macs_per_video."""
    frames = np.asarray(self.frames, np.int64)
    edges = [0] + (self.bins or sorted(set(self.frames) - {0}))
    histogram = {"0": int((frames == 0).sum())}
    histogram.update({("%d-%d" % (low + 1, high) if high > low + 1 else "%d" % high):
                      int(((frames > low) & (frames <= high)).sum()) for low, high in zip(edges, edges[1:])})
    return {"frames_read_mean": float(frames.mean()) if len(frames) else 0.0,
            "frames_read_median": float(np.median(frames)) if len(frames) else 0.0,
            "frames_read_histogram": histogram,
            "macs_per_video": float(np.mean(self.macs)) if self.macs else 0.0}



def eval_folder(recorded, model_flags, staged):
  """The folder of a run's evaluation: eval, eval_k<K> (an any-k run at a k it does not default to),
  then _exit_<rule>_<threshold>_<stages> with early exit."""
  name = "eval" if model_flags["k_frame"] == recorded["k_frame"] else "eval_k%d" % model_flags["k_frame"]
  if staged is not None:
    name += "_exit_%s_%g_%s" % (staged.rule, staged.threshold, "-".join(map(str, staged.stages)))
  return name


def describe(summary):
  """One log line of FrameCount.summary()."""
  return "frames read: mean %.2f, median %g, histogram %s | %.4g multiply-adds/video" % (
      summary["frames_read_mean"], summary["frames_read_median"],
      " ".join("%s:%d" % item for item in summary["frames_read_histogram"].items()),
      summary["macs_per_video"])


# -- the exit gate: fitted after the student ----------------------------------------------------------
def gate_targets(target, beta, stage, probabilities, labels=None, teacher=None):
  """[A] float 1/0 targets of stage `stage` (0-based): teacher, Σ_c (p_c - t_c)^2 <= β; frameexit,
  Σ_c BCE(p_c, y_c) <= β·exp((stage + 1) / 2)."""
  if target == "teacher":
    return tf.cast(tf.reduce_sum(tf.square(probabilities - teacher), axis=1) <= beta, tf.float32)
  p = tf.clip_by_value(probabilities, EPSILON, 1 - EPSILON)
  loss = -tf.reduce_sum(labels * tf.log(p) + (1 - labels) * tf.log(1 - p), axis=1)
  return tf.cast(loss <= beta * np.exp((stage + 1) / 2.0), tf.float32)


def fit_logistic(features, targets, l2=1e-3, iterations=50):
  """(weights [F], bias) of the L2-regularised logistic regression of targets [N] (0/1) on features
  [N, F], by Newton's method."""
  x = np.concatenate([np.asarray(features, np.float64), np.ones([len(features), 1])], axis=1)
  y = np.asarray(targets, np.float64)
  theta = np.zeros(x.shape[1])
  penalty = l2 * np.eye(x.shape[1])
  penalty[-1, -1] = 0.0
  for _ in range(iterations):
    p = 1 / (1 + np.exp(-x @ theta))
    gradient = x.T @ (p - y) / len(y) + penalty @ theta
    hessian = (x * (p * (1 - p))[:, None]).T @ x / len(y) + penalty + 1e-9 * np.eye(x.shape[1])
    theta -= np.linalg.solve(hessian, gradient)
  return theta[:-1].tolist(), float(theta[-1])


def fit_gate(opts):
  """Fits the exit gate of --train_dir on --gate_batches batches of --input_data_pattern (every stage
  of every video, --gate_target) and writes train_dir/exit_gate.json; returns its content."""
  model_flags = config.run_model_flags(opts.train_dir, opts)
  stages = config.int_list(opts.exit_stages, "exit_stages") or model_flags["k_frame_choices"]
  staged = Staged(model_flags, stages)
  files = readers.resolve_files(opts.input_data_pattern, "--input_data_pattern")
  if opts.gate_target == "teacher" and not opts.teacher_cache:
    raise InputError("--gate_target=teacher: expected --teacher_cache (the cache_teacher.py directory "
                     "of the training shards)")
  cache = teacher_cache_lib.TeacherCache(opts.teacher_cache) if opts.gate_target == "teacher" else None
  mixed_precision = precision.resolve(opts.mixed_precision)   # the precision eval.py serves the gate in
  graph = tf.Graph()
  with graph.as_default():
    reader = staged.reader()
    batch, iterator_init = reader.input_batch(files, opts.batch_size, training=False,
                                              num_readers=opts.num_readers, teacher_cache=cache)
    previous, fetch = None, {"features": [], "targets": []}
    for s, (_, outputs, _) in enumerate(staged.stage_outputs(batch["video_matrix"], batch["num_frames"],
                                                               decide=False)):
      probabilities = outputs["predictions"]
      fetch["features"].append(stage_features(probabilities, previous))
      fetch["targets"].append(gate_targets(opts.gate_target, opts.gate_beta, s, probabilities,
                                           batch["labels"], batch.get("teacher_predictions")))
      previous = probabilities
    variables = model_utils.scope_variables(config.role_scope(model_flags))
    saver = tf.train.Saver(variables)
  checkpoint = checkpoints.choose(opts.checkpoint_file or opts.train_dir,
                                  "--checkpoint_file" if opts.checkpoint_file else "--train_dir",
                                  needed=[v.op.name for v in variables])
  features, targets = [], []
  with tf.Session(graph=graph, config=precision.session_config(mixed_precision)) as sess:
    saver.restore(sess, checkpoint)
    sess.run(iterator_init)
    for values in readers.read_batches(sess, fetch, files, reader):
      features.append(np.stack(values["features"], axis=1))                  # [B, S, 3]
      targets.append(np.stack(values["targets"], axis=1))                    # [B, S]
      if len(features) >= opts.gate_batches:
        break
  features, targets = np.concatenate(features), np.concatenate(targets)
  fitted = [fit_logistic(features[:, s], targets[:, s]) for s in range(len(stages))]
  gate = {"stages": stages, "features": list(GATE_FEATURES), "weights": [w for w, _ in fitted],
          "biases": [b for _, b in fitted], "target": opts.gate_target, "beta": opts.gate_beta,
          "checkpoint": checkpoint, "videos": len(targets), "mixed_precision": mixed_precision,
          "target_rate": targets.mean(axis=0).tolist()}
  utils.write_json_atomic(os.path.join(opts.train_dir, GATE_FILE), gate)
  tf.logging.info("Exit gate of %s on %d videos (targets %s: share 1 per stage %s) written to %s.",
                  checkpoint, len(targets), opts.gate_target,
                  " ".join("%.2f" % r for r in gate["target_rate"]), os.path.join(opts.train_dir, GATE_FILE))
  return gate


main = utils.flag_program(fit_gate)

if __name__ == "__main__":
  utils.run_cli(main, sys.argv)
