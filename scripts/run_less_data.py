"""The paper's Table 2 on generated data: does KD help more when the students see less training data?

The teacher reads every frame of every training video. For each --fractions f, the plain uniform-k
student and the serial KD student train on the first f of each training shard only (at least one
video per shard), for the same --student_steps as the study's students; the KD student distils from
the teacher's outputs on those videos, cached with the teacher's batch-norm statistics recomputed
from the whole training set (cache_teacher.py --precise_bn_data_pattern), so it is the same teacher at
every f. f = 1 is the study's own uniform and kd runs. With run_study.py's machinery and run names:
an --out_dir of a study reuses its data, teachers, caches and students. Writes into --out_dir:
  less_data.md / less_data.csv   GAP of the plain and the KD student per fraction (mean ± sample std
                                 over seeds), KD − plain paired by seed, and whether it beats the spread
  less_data.png                  GAP against the share of training videos, plain and KD

  python scripts/run_less_data.py --out_dir=out/study --fractions=0.1,0.25,0.5 --ks=30 --seeds=3
"""

import argparse
import math
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

import cache_teacher  # noqa: E402
import readers  # noqa: E402
import run_ablation  # noqa: E402
import run_study  # noqa: E402
import utils  # noqa: E402
from utils import InputError  # noqa: E402

STUDENT_FLAGS = {name: flags for name, _, flags in run_study.STUDENTS}
# The paper's Table 2 (H-RNN, k = 30, GAP): share of the training data -> (uniform-k student, serial KD).
PAPER = {0.1: (0.718, 0.774), 0.25: (0.756, 0.788), 0.5: (0.776, 0.796)}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", default=os.path.join(ROOT, "out", "study"))
  parser.add_argument("--fractions", default="0.1,0.25,0.5",
                      help="Shares of each training shard the students train on (1 is added: the study's runs).")
  parser.add_argument("--ks", default="30", help="k of the students.")
  parser.add_argument("--seeds", type=int, default=3)
  run_study.add_run_arguments(parser)
  args = run_study.parse_family(parser, argv)
  try:
    args.fraction_list = sorted({float(f) for f in args.fractions.split(",")} | {1.0})
  except ValueError:
    args.fraction_list = []
  if not args.fraction_list or not all(0 < f <= 1 for f in args.fraction_list):
    raise InputError("--fractions=%s: expected comma-separated shares of the training data in (0, 1]"
                     % args.fractions)
  return args


def percent(fraction):
  return ("%g" % (100 * fraction)).replace(".", "p")


def subset(train_pattern, fraction, folder):
  """The training-file pattern of the first `fraction` of each shard of `train_pattern`, written once
  into `folder` (under a temporary name, renamed when complete); returns (pattern, videos)."""
  if not os.path.isdir(folder):
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for path in readers.resolve_files(train_pattern, "the study's training data"):
      keep = max(1, math.ceil(fraction * readers.check_tfrecord_framing(path)[0]))
      with tf.io.TFRecordWriter(os.path.join(tmp, os.path.basename(path))) as writer:
        for _, record in zip(range(keep), tf.io.tf_record_iterator(path)):
          writer.write(record)
    os.rename(tmp, folder)
  pattern = os.path.join(folder, os.path.basename(train_pattern))
  return pattern, count_videos(pattern)


def count_videos(pattern):
  return sum(readers.check_tfrecord_framing(f)[0] for f in readers.resolve_files(pattern, pattern))


def subset_cache(args, data, seed, pattern, tag):
  """The seed's teacher cached on the subset `pattern`, its batch-norm statistics (when the runs
  recompute them) from the whole training set."""
  cache_dir = os.path.join(args.out_dir, "cache", "teacher_seed%d_%s" % (seed, tag))
  cache_teacher.main(["cache_teacher.py", "--teacher_checkpoint=" + run_study.teacher_dir(args, seed),
                      "--input_data_pattern=" + pattern, "--cache_dir=" + cache_dir,
                      "--batch_size=%d" % args.batch_size,
                      "--precise_bn_batches=%d" % run_study.extra_flag(args, "precise_bn_batches"),
                      "--precise_bn_data_pattern=" + data["train"]])
  return cache_dir


def main(argv=None):
  args = parse_args(argv)
  ks, data = run_study.open_study(args, args.ks)
  gaps, videos = {}, {}   # (fraction, name, k) -> [GAP per seed]; fraction -> training videos
  for seed in range(args.seeds):
    caches = {}
    run_study.train_run(args, data, "teacher", None, seed, ["--model_type=teacher"], caches, args.teacher_steps)
    for fraction in args.fraction_list:
      if fraction == 1:
        run_data, tag, caches_f = data, "", caches
        videos[fraction] = count_videos(data["train"])
      else:
        tag = "f" + percent(fraction)
        pattern, videos[fraction] = subset(data["train"], fraction,
                                           os.path.join(os.path.dirname(os.path.dirname(data["train"])),
                                                        "train_" + tag))
        run_data = dict(data, train=pattern)
        caches_f = {seed: subset_cache(args, data, seed, pattern, tag)}
      for name in ("uniform", "kd"):
        for k in ks:
          train_dir, _ = run_study.train_run(args, run_data, name + ("_" + tag if tag else ""), k, seed,
                                             STUDENT_FLAGS[name], caches_f, args.student_steps)
          gaps.setdefault((fraction, name, k), []).append(run_ablation.final_gap(train_dir))
  table = write_report(args, ks, gaps, videos)
  print("\n" + table + "\nPlot: " + os.path.join(args.out_dir, "less_data.png"))


def write_report(args, ks, gaps, videos):
  cell = lambda values: ("%.4f" % values[0] if len(values) == 1 else
                         "%.4f ± %.4f" % (np.mean(values), np.std(values, ddof=1)))
  std = lambda values: float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  rows = []
  for k in ks:
    for fraction in args.fraction_list:
      plain, kd = gaps[(fraction, "uniform", k)], gaps[(fraction, "kd", k)]
      paired = np.subtract(kd, plain)
      beats = paired.mean() > max(std(plain), std(kd), std(paired))
      paper = PAPER.get(fraction) if k == 30 else None
      rows.append(["%d" % k, "%g%%" % (100 * fraction), "{:,}".format(videos[fraction]), cell(plain),
                   cell(kd), "%+.4f ± %.4f" % (paired.mean(), std(paired)), "yes" if beats else "no",
                   "%.3f / %.3f (%+.3f)" % (paper[0], paper[1], paper[1] - paper[0]) if paper else ""])
  table = run_study.write_table(
      args.out_dir, "less_data", "Students trained on part of the training videos (validation GAP; "
      "mean ± std over %d seeds)" % args.seeds,
      ["k", "training data", "videos", "plain uniform-k", "KD", "KD − plain (paired)", "beats?",
       "paper (H-RNN k=30): uniform / KD"], rows)
  plot(args, ks, gaps)
  return table


def plot(args, ks, gaps):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 5))
  for k in ks:
    for name, label in (("uniform", "plain uniform-k"), ("kd", "KD")):
      values = [gaps[(f, name, k)] for f in args.fraction_list]
      ax.errorbar([100 * f for f in args.fraction_list], [np.mean(v) for v in values],
                  yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in values], marker="o", capsize=3,
                  label="%s, k=%d" % (label, k))
  ax.set_xscale("log")
  ax.set_xticks([100 * f for f in args.fraction_list], ["%g%%" % (100 * f) for f in args.fraction_list])
  ax.minorticks_off()
  run_study._finish(ax, "Students on part of the training data (teacher: all of it)",
                    "share of the training videos the students see (log scale)")
  run_study._save(fig, os.path.join(args.out_dir, "less_data.png"))


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
