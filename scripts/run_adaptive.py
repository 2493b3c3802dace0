"""GAP against the frames read and the multiply-adds spent per video: one any-k student with early exit
beside the fixed-k students and the teacher (issue 16), on the study's generated data.

With run_study.py's machinery and run names (an --out_dir of a study reuses its data, teacher, cache
and fixed-k students), for each seed it trains the teacher, the uniform-k and KD students at each
--ks, and two any-k students (--k_frame_choices=--choices: `anyk` on L_CE, `kd_anyk` serial KD from
the teacher cache), fits each any-k student's exit gate (early_exit.py, teacher agreement; with
--frameexit_beta also one on FrameExit's targets), and evaluates the any-k students at each fixed k
of --choices and with early exit (stages --choices) under each rule and threshold. It writes into
--out_dir:
  adaptive.md / adaptive.csv   GAP, frames read (mean, median) and multiply-adds per video of every
                               model and setting (mean ± std over seeds)
  gap_vs_frames.png            GAP against the mean frames read, and against multiply-adds per video

  python scripts/run_adaptive.py --out_dir=out/study [run_study.py's data and training options]
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

import config  # noqa: E402
import early_exit  # noqa: E402
import eval as eval_lib  # noqa: E402
import model_utils  # noqa: E402
import run_study  # noqa: E402
import utils  # noqa: E402
from utils import InputError  # noqa: E402

STUDENT_FLAGS = {name: flags for name, _, flags in run_study.STUDENTS}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", default=os.path.join(ROOT, "out", "study"))
  parser.add_argument("--ks", default="6,30", help="k of the fixed-k uniform and KD students.")
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument("--choices", default="6,10,15,20,30",
                      help="--k_frame_choices of the any-k students, and the early-exit stages.")
  parser.add_argument("--max_prob_thresholds", default="0.5,0.7,0.8,0.9,0.95")
  parser.add_argument("--change_thresholds", default="0.005,0.01,0.02,0.05,0.1")
  parser.add_argument("--gate_thresholds", default="0.5,0.7,0.9")
  parser.add_argument("--gate_beta", type=float, default=0.5,
                      help="early_exit.py --gate_beta (teacher agreement: squared distance to the "
                      "teacher's probabilities).")
  parser.add_argument("--frameexit_beta", type=float, default=0,
                      help="Also fit and evaluate a gate on FrameExit's targets (early_exit.py "
                      "--gate_target=frameexit --gate_beta=this: the stage's label cross-entropy <= "
                      "beta * exp(s/2)), rows `gate_frameexit`; 0: not.")
  run_study.add_run_arguments(parser)
  args = parser.parse_args(argv)
  try:
    args.rules = [(rule, [float(t) for t in text.split(",")]) for rule, text in (
        ("max_prob", args.max_prob_thresholds), ("prediction_change", args.change_thresholds),
        ("gate", args.gate_thresholds))]
  except ValueError:
    raise InputError("--max_prob_thresholds, --change_thresholds, --gate_thresholds: expected "
                     "comma-separated numbers")
  return args


def evaluate_final(train_dir, data, model_flags=None, staged=None):
  """Metrics of the run's latest checkpoint (read back if this setting was evaluated already; a gate
  is evaluated anew, since a gate fitted again writes to the same folder)."""
  recorded = config.load_model_flags(train_dir)
  checkpoint = tf.train.latest_checkpoint(train_dir)
  path = os.path.join(train_dir, early_exit.eval_folder(recorded, model_flags or recorded, staged),
                      "metrics-%d.json" % int(checkpoint.rsplit("-", 1)[1]))
  if os.path.exists(path) and not (staged and staged.rule == "gate"):
    return utils.read_json(path, eval_lib.METRICS_EXPECTED)
  evaluator = eval_lib.Evaluator(train_dir, data["validate"], batch_size=256, log_every_batches=1000,
                                 model_flags=model_flags, staged=staged)
  try:
    return evaluator.evaluate(checkpoint)
  finally:
    evaluator.sess.close()


def gates(args):
  """(row name, early_exit.py --gate_target, --gate_beta) of each gate the curve shows."""
  return [("gate", "teacher", args.gate_beta)] + (
      [("gate_frameexit", "frameexit", args.frameexit_beta)] if args.frameexit_beta else [])


def fit_gate(data, train_dir, cache, stages, target, beta):
  """The run's exit gate on `target` and `beta` (unless its exit_gate.json already holds that one for
  the latest checkpoint); returns its per-stage (weights, bias)."""
  path = os.path.join(train_dir, early_exit.GATE_FILE)
  wanted = {"checkpoint": tf.train.latest_checkpoint(train_dir), "beta": beta, "stages": stages,
            "target": target}
  if not (os.path.exists(path) and all(utils.read_json(path, "the exit gate").get(key) == value
                                       for key, value in wanted.items())):
    early_exit.main(["early_exit.py", "--train_dir=" + train_dir, "--input_data_pattern=" + data["train"],
                     "--teacher_cache=" + cache, "--gate_target=" + target, "--gate_beta=%g" % beta,
                     "--exit_stages=" + ",".join(map(str, stages)), "--batch_size=64"])
  return early_exit.read_gate(train_dir, stages)


def point(metrics, model_flags, frames):
  """(GAP, mean frames read, median, multiply-adds per video) of an evaluation; a fixed-k run's
  metrics written before eval.py reported frames count its k."""
  return (metrics["gap"], metrics.get("frames_read_mean", frames), metrics.get("frames_read_median", frames),
          metrics.get("macs_per_video", model_utils.macs(model_flags, frames)))


def main(argv=None):
  args = parse_args(argv)
  stages = config.int_list(args.choices.split(","), "choices")
  if stages[-1] > args.max_frames:
    raise InputError("--choices=%s: expected at most --max_frames=%d" % (args.choices, args.max_frames))
  ks, data = run_study.open_study(args, args.ks)
  any_k = ["--k_frame_choices=" + ",".join(map(str, stages))]
  points, caches = {}, {}   # (model, setting) -> [per seed (gap, frames mean, median, macs)]
  for seed in range(args.seeds):
    train_dir, curve = run_study.train_run(args, data, "teacher", None, seed, ["--model_type=teacher"],
                                           caches, args.teacher_steps)
    points.setdefault(("teacher", "all frames"), []).append(
        point(curve[-1], config.load_model_flags(train_dir), args.max_frames))
    for name, label in (("uniform", "uniform-k student"), ("kd", "KD student")):
      for k in ks:
        train_dir, curve = run_study.train_run(args, data, name, k, seed, STUDENT_FLAGS[name], caches,
                                               args.student_steps)
        points.setdefault((label, "k=%d" % k), []).append(
            point(curve[-1], config.load_model_flags(train_dir), k))
    for name, label in (("uniform", "any-k student"), ("kd", "any-k KD student")):
      train_dir, _ = run_study.train_run(args, data, "anyk" if name == "uniform" else "kd_anyk", None, seed,
                                         STUDENT_FLAGS[name] + any_k, caches, args.student_steps)
      model_flags = config.load_model_flags(train_dir)
      for k in stages:
        flags_k = dict(model_flags, k_frame=k)
        points.setdefault((label, "k=%d" % k), []).append(
            point(evaluate_final(train_dir, data, flags_k), flags_k, k))
      cache = caches.get(seed) or run_study.teacher_cache_dir(args, data, seed)
      for rule, thresholds in args.rules:
        for name, target, beta in gates(args) if rule == "gate" else [(rule, None, None)]:
          gate = fit_gate(data, train_dir, cache, stages, target, beta) if target else None
          for threshold in thresholds:   # a gate's points are evaluated while its exit_gate.json is there
            staged = early_exit.Staged(model_flags, stages, rule, threshold, gate)
            points.setdefault((label, "%s %g" % (name, threshold)), []).append(
                point(evaluate_final(train_dir, data, staged=staged), model_flags, stages[-1]))
  rows = []
  for (model, setting), values in points.items():
    values = np.asarray(values)
    gap = ("%.4f" % values[0, 0] if len(values) == 1 else
           "%.4f ± %.4f" % (values[:, 0].mean(), values[:, 0].std(ddof=1)))
    rows.append([model, setting, gap, "%.2f" % values[:, 1].mean(), "%g" % np.median(values[:, 2]),
                 "{:,.0f}".format(values[:, 3].mean())])
  table = run_study.write_table(args.out_dir, "adaptive", "GAP against frames read and multiply-adds "
                                "(validation; mean ± std over %d seeds)" % args.seeds,
                                ["model", "setting", "GAP", "frames read (mean)", "frames read (median)",
                                 "multiply-adds / video"], rows)
  plot(args.out_dir, points)
  print("\n" + table + "\nPlot: " + os.path.join(args.out_dir, "gap_vs_frames.png"))


def plot(out_dir, points):
  """gap_vs_frames.png: one line per model (fixed k) or per model and exit rule (thresholds)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  series = {}
  for (model, setting), values in points.items():
    kind = model if setting.startswith(("k=", "all")) else "%s, %s" % (model, setting.split()[0])
    series.setdefault(kind, []).append(np.mean(np.asarray(values), axis=0))
  colours = dict(zip(sorted(series), plt.cm.tab20(np.linspace(0, 1, 20))))
  fig, axes = plt.subplots(1, 2, figsize=(13, 5))
  for ax, column, xlabel in ((axes[0], 1, "frames read per video (mean; log scale)"),
                             (axes[1], 3, "multiply-adds per video (log scale)")):
    for kind, values in sorted(series.items()):
      values = sorted(values, key=lambda v: v[column])
      ax.plot([v[column] for v in values], [v[0] for v in values], marker="o", ms=4, label=kind,
              linestyle="--" if "," in kind else "-", color=colours[kind])
    ax.set_xscale("log")
    run_study._finish(ax, "GAP against %s" % xlabel.split(" (")[0], xlabel, legend=column == 1)
  run_study._save(fig, os.path.join(out_dir, "gap_vs_frames.png"))


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
