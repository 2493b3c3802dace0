"""Every cost ratio of the study in one run, on the seed's full-size model (groups 8, 128 clusters,
hidden 2048, 3862 classes, batch 80) and generated 300-frame shards (1024 + 128 dims):

  * TensorFlow's float32 matmul rate on this machine (the reference every rate is compared with);
  * training examples/s of the teacher, the k=30 and k=6 students, serial KD k=30 with the live
    frozen teacher and serial KD k=30 from a teacher cache (plus the cache's one-off writing rate);
  * steady-state inference videos/s through inference.py's checkpoint path (reader + model; the
    first batches excluded) of the teacher, k=30 and k=6, and of an any-k student with early exit
    (stages 6, 10, 15, 20, 30, early_exit.py) at its two ends: every video exits at the first stage
    (6 frames, one head) or reads every stage (30 frames, five heads); then the start-up before the first batch,
    split into file validation, graph build, session, checkpoint restore and first batch;
each as achieved GFLOP/s (2 per multiply-add of model_utils.macs; training = 3x the forward pass, plus
one teacher forward pass for live KD) and as a fraction of the matmul rate;
  * every model family (at its published size) as a teacher and at each k: parameters,
    multiply-adds per video and measured ms/video at inference (scripts/model_costs.py).

--precisions=float32,bfloat16 (or float16) measures the matmul, training (cache writer included) and
inference parts in each precision (--mixed_precision), alternated model by model, each against the
matmul rate of its own precision, and adds each rate's ratio to its float32 rate. A precision this
machine lacks runs float32 after one warning line (precision.resolve) and is labelled so.

  .venv/bin/python bench/bench_costs.py              # full size: many minutes, run it on a quiet machine
  .venv/bin/python bench/bench_costs.py --small      # a tiny model and data set: seconds (tests)
  .venv/bin/python bench/bench_costs.py --parts=inference,startup   # a subset
  .venv/bin/python bench/bench_costs.py --parts=matmul,train,inference --precisions=float32,bfloat16

Training and inference use checkpoints written from freshly initialised weights (speed does not
depend on their values); training is timed over steps after warm-up steps.
"""

import argparse
import os
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()

import bench_readers  # noqa: E402
import cache_teacher  # noqa: E402
import checkpoints  # noqa: E402
import config  # noqa: E402
import early_exit  # noqa: E402
import inference  # noqa: E402
import model_costs  # noqa: E402
import model_utils  # noqa: E402
import precision  # noqa: E402
import readers  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402

SIZES = {
    "full": dict(groups=8, clusters=128, hidden=2048, classes=3862, batch=80, frames=300, videos=240,
                 matmul=(2048, 4096), warmup_steps=2, train_steps=6, inference_secs=20.0,
                 family_timing=dict(batch=8, repeats=2, rounds_of_repeats=2),
                 # The paper's code's, WILLOW's and the starter's MoE-2 head; NeXtVLAD is the seed's.
                 families={"NeXtVLADModel": [],
                           "HierarchicalRnnModel": ["--video_level_classifier_model=MoeModel"],
                           "NetVLADModelLF": ["--video_level_classifier_model=MoeModel"],
                           "LstmModel": ["--video_level_classifier_model=MoeModel"],
                           "DbofModel": ["--video_level_classifier_model=MoeModel"]}),
    "small": dict(groups=2, clusters=8, hidden=32, classes=20, batch=4, frames=40, videos=32,
                  matmul=(256,), warmup_steps=1, train_steps=2, inference_secs=0.5,
                  family_timing=dict(batch=4, repeats=1, rounds_of_repeats=1),
                  families={"NeXtVLADModel": [],
                            "HierarchicalRnnModel": ["--hrnn_cells=16", "--hrnn_block_frames=10",
                                                     "--hrnn_student_block_frames=3"],
                            "NetVLADModelLF": ["--netvlad_cluster_size=8", "--netvlad_hidden_size=32"],
                            "LstmModel": ["--lstm_cells=16"],
                            "DbofModel": ["--dbof_cluster_size=64", "--dbof_hidden_size=32"]}),
}
PARTS = ("matmul", "train", "inference", "startup", "families")
PRECISIONS = {"float32": "none", "bfloat16": "bfloat16", "float16": "float16"}   # --precisions: the mode
FAMILY_KS = (6, 30)  # the students of the families part
EXIT_STAGES = [6, 10, 15, 20, 30]
# The two ends of early exit: (row, --exit_rule, --exit_threshold, stages every video reads).
EXIT_ENDS = (("exit at stage 1", "max_prob", 0.0, 1), ("every stage", "none", 0.5, len(EXIT_STAGES)))
TARGETS = "cached KD k=30 step <= 1.15x student k=30 step; inference k=30 >= 5x, k=6 >= 9x teacher; " \
          "teacher training >= 80% of matmul"


def log(message):
  print("[bench_costs %6.1f s] %s" % (time.time() - START, message), flush=True)


def matmul_rates(sizes, mixed_precision="none", repeats=5):
  """Best GFLOP/s of an n x n float32 matmul per size (TensorFlow, this machine's threads), in a session
  of `mixed_precision` (its rewrite casts the matmul to 16 bits)."""
  rates = {}
  for n in sizes:
    with tf.Graph().as_default():
      a = tf.Variable(tf.random.normal([n, n]))
      b = tf.Variable(tf.random.normal([n, n]))
      product = tf.reduce_sum(tf.matmul(a, b))  # a scalar comes back: the copy-out is not timed
      with tf.Session(config=precision.session_config(mixed_precision)) as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(product)
        best = min(_timed(lambda: sess.run(product)) for _ in range(repeats))
    rates[n] = 2.0 * n ** 3 / best / 1e9
  return rates


def _timed(fn):
  started = time.perf_counter()
  fn()
  return time.perf_counter() - started


def common_flags(size, data_pattern):
  return ["train.py", "--train_data_pattern=" + data_pattern, "--feature_names=rgb,audio",
          "--feature_sizes=1024,128", "--num_classes=%d" % size["classes"], "--max_frames=%d" % size["frames"],
          "--batch_size=%d" % size["batch"], "--groups=%d" % size["groups"],
          "--nextvlad_cluster_size=%d" % size["clusters"], "--nextvlad_hidden_size=%d" % size["hidden"],
          "--expansion=2", "--gating_reduction=8", "--drop_rate=0.5", "--num_epochs=0",
          "--num_readers=4", "--shuffle_buffer=%d" % (2 * size["batch"]), "--log_every_steps=1000000"]


def parsed_model_flags(argv):
  """The model flags a train.py command line `argv` records."""
  train.FLAGS.unparse_flags()
  train.FLAGS(argv)
  return model_utils.model_flags_from(train.FLAGS.flag_values_dict())


def family_costs(size, flags):
  """Rows (family, frames read, parameters, multiply-adds, ms/video) of every family as a teacher (all
  frames) and as a student at each of FAMILY_KS."""
  rows = []
  for family, family_flags in size["families"].items():
    for role in [["--model_type=teacher"]] + [["--model_type=student", "--k_frame=%d" % k] for k in FAMILY_KS]:
      model_flags = parsed_model_flags(flags + ["--model=" + family] + family_flags + role)
      frames = config.frames_read(model_flags)
      cost = model_costs.measure(model_flags, frames, **size["family_timing"])
      rows.append((family, frames or model_flags["max_frames"], cost["parameters"], cost["macs"],
                   cost["ms_per_video"]))
      log("%s, %d frames: %.4g multiply-adds, %.2f ms/video" % (family, rows[-1][1], cost["macs"],
                                                                 cost["ms_per_video"]))
  return rows


def write_initial_run(train_dir, argv):
  """A train_dir (model_flags.json + model.ckpt-0) of freshly initialised weights for the flags."""
  model_flags = parsed_model_flags(argv)
  with tf.Graph().as_default():
    shape = [1, config.frames_read(model_flags) or model_flags["max_frames"], 1152]
    model_utils.build_model(model_flags, tf.zeros(shape), tf.ones([1], tf.int32), is_training=False)
    tf.train.get_or_create_global_step()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      tf.train.Saver().save(sess, os.path.join(train_dir, "model.ckpt"), global_step=0)
  config.write_model_flags(train_dir, model_flags)
  return model_flags


def seconds_per_step(argv, warmup, steps):
  """Mean seconds of a training step (after `warmup` steps) of train.prepare's graph for `argv`."""
  train.FLAGS.unparse_flags()
  train.FLAGS(argv)
  run = train.prepare(train.FLAGS)
  try:
    for _ in range(warmup):
      run.sess.run(run.parts.fetch["train_op"])
    return _timed(lambda: [run.sess.run(run.parts.fetch["train_op"]) for _ in range(steps)]) / steps
  finally:
    run.sess.close()


def inference_rate(train_dir, files, batch, seconds, staged=None, mixed_precision="none"):
  """Steady-state videos/s through inference.py's checkpoint path (reader, model or `staged` early exit,
  top-k) in `mixed_precision`: timed from the third batch on, for `seconds` or until the data ends."""
  opts = types.SimpleNamespace(train_dir=train_dir, checkpoint_file="", batch_size=batch, num_readers=4,
                               top_k=20)
  model_flags = config.load_model_flags(train_dir)
  graph, parts = inference._checkpoint_graph(opts, files, model_flags, staged)
  batches = inference._batches_from_checkpoint(
      graph, parts, files, model_flags, checkpoints.choose(train_dir, "--train_dir", needed=parts["restored"]),
      mixed_precision)
  next(batches)
  next(batches)
  steady_start, videos = time.perf_counter(), 0
  for video_ids, _, _, _, _, _ in batches:
    videos += len(video_ids)
    if time.perf_counter() - steady_start >= seconds:
      break
  rate = videos / (time.perf_counter() - steady_start)
  batches.close()
  return rate


def startup_phases(train_dir, files, batch):
  """Seconds of each start-up phase of evaluation/inference (what eval.Evaluator and inference.py do
  before their first batch): file validation, graph build, checkpoint check (checkpoints.choose reads
  back every tensor the restore needs), session, restore, first batch."""
  model_flags = config.load_model_flags(train_dir)
  phases = {}
  phases["validate files"] = _timed(lambda: model_utils.make_reader(model_flags).validate_files(files))
  graph = tf.Graph()
  with graph.as_default():
    started = time.perf_counter()
    parts = model_utils.build_evaluation_graph(model_flags, files, batch)
    phases["graph build"] = time.perf_counter() - started - phases["validate files"]
  started = time.perf_counter()
  checkpoint = checkpoints.choose(train_dir, "--train_dir", needed=parts["restored"])
  phases["check checkpoint"] = time.perf_counter() - started
  started = time.perf_counter()
  sess = tf.Session(graph=graph)
  phases["session"] = time.perf_counter() - started
  phases["restore"] = _timed(lambda: parts["saver"].restore(sess, checkpoint))
  phases["first batch"] = _timed(lambda: (sess.run(parts["iterator_init"]),
                                          sess.run(parts["outputs"]["predictions"])))
  sess.close()
  return phases


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--small", action="store_true", help="A tiny model and data set (seconds).")
  parser.add_argument("--parts", default=",".join(PARTS), help="Comma-separated subset of %s." % ",".join(PARTS))
  parser.add_argument("--work_dir", default=None, help="Where to write data and runs (default: a temp dir).")
  parser.add_argument("--precisions", default="float32",
                      help="Comma-separated precisions of the matmul, train and inference parts, from %s; "
                      "each measured in the same run, alternated, against the matmul rate of its own "
                      "precision." % ",".join(PRECISIONS))
  args = parser.parse_args(argv)
  parts = args.parts.split(",")
  if set(parts) - set(PARTS):
    raise utils.InputError("--parts=%s: expected names from %s" % (args.parts, ",".join(PARTS)))
  precisions = args.precisions.split(",")
  if set(precisions) - set(PRECISIONS) or len(set(precisions)) != len(precisions):
    raise utils.InputError("--precisions=%s: expected distinct names from %s" % (args.precisions, ",".join(PRECISIONS)))
  # What each runs as here (precision.resolve: float32 after one warning where the hardware is missing).
  modes = {p: precision.resolve(PRECISIONS[p], "--precisions") for p in precisions}
  labels = {p: "" if p == "float32" else " [%s%s]" % (p, " ran as float32" if modes[p] == "none" else "")
            for p in precisions}
  size = SIZES["small" if args.small else "full"]
  work = args.work_dir or tempfile.mkdtemp(prefix="bench_costs_")
  data_dir = os.path.join(work, "data")
  os.makedirs(data_dir, exist_ok=True)
  log("%s size: groups %d, clusters %d, hidden %d, %d classes, batch %d, %d videos of %d frames; %d cores; "
      "work dir %s" % ("small" if args.small else "full", size["groups"], size["clusters"], size["hidden"],
                       size["classes"], size["batch"], size["videos"], size["frames"], os.cpu_count(), work))
  bench_readers.write_shards(data_dir, size["videos"], size["frames"], num_classes=size["classes"])
  pattern = os.path.join(data_dir, "train*.tfrecord")
  files = readers.resolve_files(pattern)
  flags = common_flags(size, pattern)
  roles = {"teacher": ["--model_type=teacher", "--k_frame=%d" % size["frames"]],
           "student k=30": ["--model_type=student", "--k_frame=30"],
           "student k=6": ["--model_type=student", "--k_frame=6"]}
  runs, macs = {}, {}
  for name, role in roles.items():
    runs[name] = os.path.join(work, name.replace(" ", "_").replace("=", ""))
    model_flags = write_initial_run(runs[name], flags + ["--train_dir=" + runs[name]] + role)
    macs[name] = model_costs.count(model_flags, config.frames_read(model_flags))[1]
  log("multiply-adds per video: " + ", ".join("%s %.3g" % item for item in macs.items()))

  rows, results, reference = [], {}, {}
  if "matmul" in parts:
    for p in precisions:
      rates = matmul_rates(size["matmul"], modes[p])
      reference[p] = max(rates.values())
      log("matmul%s: %s" % (labels[p], ", ".join("%d^2 %.1f GFLOP/s" % item for item in rates.items())))
      rows.append(("TensorFlow fp32 matmul " + " / ".join("%d²" % n for n in rates) + labels[p], "", "",
                   " / ".join("%.1f" % r for r in rates.values()), "100% (best)"))

  def row(what, p, per_sec, unit, flops_per_item):
    gflops = per_sec * flops_per_item / 1e9
    rows.append((what + labels[p], "%.1f %s/s" % (per_sec, unit), "%.1f ms" % (1000.0 / per_sec), "%.1f" % gflops,
                 "%.0f%%" % (100 * gflops / reference[p]) if p in reference else "–"))
    results[what + labels[p]] = per_sec

  if "train" in parts:
    caches, cache_rates = {}, {}
    for p in precisions:
      caches[p] = os.path.join(work, "teacher_cache" + ("" if p == "float32" else "_" + p))
      started = time.perf_counter()
      cache_teacher.main(["cache_teacher.py", "--teacher_checkpoint=" + runs["teacher"],
                          "--input_data_pattern=" + pattern, "--cache_dir=" + caches[p],
                          "--batch_size=%d" % size["batch"], "--mixed_precision=" + modes[p]])
      cache_rates[p] = size["videos"] / (time.perf_counter() - started)
    trainings = [("train teacher", lambda p: roles["teacher"], 6.0 * macs["teacher"]),
                 ("train student k=30", lambda p: roles["student k=30"], 6.0 * macs["student k=30"]),
                 ("train student k=6", lambda p: roles["student k=6"], 6.0 * macs["student k=6"]),
                 ("train KD k=30, live teacher", lambda p: ["--model_type=kd", "--k_frame=30",
                                                            "--teacher_checkpoint=" + runs["teacher"]],
                  6.0 * macs["student k=30"] + 2.0 * macs["teacher"]),
                 ("train KD k=30, cached teacher", lambda p: ["--model_type=kd", "--k_frame=30",
                                                              "--teacher_cache=" + caches[p]],
                  6.0 * macs["student k=30"])]
    for what, role, flops in trainings:
      for p in precisions:  # alternated: each model in every precision before the next model
        train_dir = os.path.join(work, "train_" + what.split(" ", 1)[1].replace(" ", "_").replace(",", "").replace(
            "=", "") + ("" if p == "float32" else "_" + p))
        step = seconds_per_step(flags + ["--train_dir=" + train_dir, "--mixed_precision=" + modes[p]] + role(p),
                                size["warmup_steps"], size["train_steps"])
        log("%s%s: %.3f s/step" % (what, labels[p], step))
        row(what, p, size["batch"] / step, "examples", flops)
    for p in precisions:
      row("write teacher cache (once, whole pass)", p, cache_rates[p], "videos", 2.0 * macs["teacher"])

  if "inference" in parts:
    repeated = files * 50  # enough batches for the steady state; stopped after inference_secs
    for name in roles:
      for p in precisions:
        rate = inference_rate(runs[name], repeated, size["batch"], size["inference_secs"],
                              mixed_precision=modes[p])
        log("inference %s%s: %.1f videos/s" % (name, labels[p], rate))
        row("inference %s (steady state)" % name, p, rate, "videos", 2.0 * macs[name])
    any_k = os.path.join(work, "student_any_k")
    any_k_flags = write_initial_run(any_k, flags + ["--train_dir=" + any_k, "--model_type=student",
                                                    "--k_frame_choices=" + ",".join(map(str, EXIT_STAGES))])
    for what, rule, threshold, stages_read in EXIT_ENDS:
      staged = early_exit.Staged(any_k_flags, EXIT_STAGES, rule, threshold)
      spent = EXIT_STAGES[stages_read - 1] * staged.model.frame_macs() + stages_read * staged.model.head_macs(
          size["classes"])
      for p in precisions:
        rate = inference_rate(any_k, repeated, size["batch"], size["inference_secs"], staged, modes[p])
        log("inference any-k, %s%s: %.1f videos/s" % (what, labels[p], rate))
        row("inference any-k, %s (steady state)" % what, p, rate, "videos", 2.0 * spent)

  if rows:
    print("\n| what | rate | per item | GFLOP/s | of matmul |\n|---|---|---|---|---|")
    for cells in rows:
      print("| " + " | ".join(cells) + " |")
  if "startup" in parts:
    print("\n| start-up phase (eval/inference) | " + " | ".join(roles) + " |\n|---|" + "---|" * len(roles))
    phases = {name: startup_phases(runs[name], files, size["batch"]) for name in roles}
    for phase in phases["teacher"]:
      print("| %s | %s |" % (phase, " | ".join("%.3f s" % phases[name][phase] for name in roles)))
  if "families" in parts:
    print("\n| family | frames read | parameters | M multiply-adds / video | ms / video |\n|---|---|---|---|---|")
    for family, frames, parameters, macs_per_video, ms in family_costs(size, flags):
      print("| %s | %d | %s | %s | %.2f |" % (family, frames, "{:,}".format(parameters),
                                               "{:,.1f}".format(macs_per_video / 1e6), ms))
  ratios = []
  for p in precisions:
    result = lambda what: results[what + labels[p]]
    if "train" in parts:
      ratios.append(("cached KD k=30 step / student k=30 step" + labels[p], result("train student k=30") /
                     result("train KD k=30, cached teacher"), "<= 1.15", lambda r: r <= 1.15))
      ratios.append(("live KD k=30 step / student k=30 step" + labels[p], result("train student k=30") /
                     result("train KD k=30, live teacher"), "", None))
      if p in reference:
        ratios.append(("teacher training / matmul rate" + labels[p], result("train teacher") * 6.0 * macs["teacher"]
                       / 1e9 / reference[p], ">= 0.80", lambda r: r >= 0.8))
    if "inference" in parts:
      for k, target in ((30, 5.0), (6, 9.0)):
        ratios.append(("inference k=%d / teacher videos/s" % k + labels[p],
                       result("inference student k=%d (steady state)" % k) / result("inference teacher (steady state)"),
                       ">= %g" % target, lambda r, t=target: r >= t))
      for what, k in (("exit at stage 1", 6), ("every stage", 30)):
        for reference_name in ("student k=%d" % k, "teacher"):
          ratios.append(("inference any-k %s / %s videos/s" % (what, reference_name) + labels[p],
                         result("inference any-k, %s (steady state)" % what)
                         / result("inference %s (steady state)" % reference_name), "", None))
  # Each precision against float32, per item (the goals: the teacher's step 1.5x, student inference 2x).
  goals = {"train teacher": 1.5, "inference student k=30 (steady state)": 2.0,
           "inference student k=6 (steady state)": 2.0}
  for p in [p for p in precisions if p != "float32" and "float32" in precisions]:
    for what in [what for what in results if what + labels[p] in results]:   # the float32 rows
      target = goals.get(what) if modes[p] != "none" else None   # no verdict on a precision run as float32
      ratios.append(("%s: %s / float32 rate" % (what, labels[p].strip(" []")), results[what + labels[p]] /
                     results[what], ">= %g" % target if target else "", (lambda r, t=target: r >= t) if target else None))
  if ratios:
    print("\n| ratio | measured | target |\n|---|---|---|")
    for what, value, target, check in ratios:
      verdict = "" if check is None else (" (met)" if check(value) else " (missed)")
      print("| %s | %.2f | %s%s |" % (what, value, target or "–", verdict))
  return results


START = time.time()

if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
