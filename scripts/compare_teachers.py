"""Does a MixNeXtVLAD teacher distil a better student than a single NeXtVLAD teacher trained for the
same number of steps? On generated data (run_study's data, training settings and machinery): per seed,
both teachers (all frames), then at each k a serial KD NeXtVLAD student of each; every run evaluated on
the validation split. Writes into --out_dir results.md/.csv (GAP, mAP, Hit@1, PERR), results_gap.md/.csv
and teachers_paired.md (per-seed difference of the two KD students' GAP). Resumable like run_study.

  python scripts/compare_teachers.py --out_dir out/compare_teachers
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import numpy as np  # noqa: E402

import run_study  # noqa: E402  (sets up the paths, logging and TF)
import utils  # noqa: E402

TEACHERS = (("nextvlad", "NeXtVLAD"), ("mix", "MixNeXtVLAD"))  # (name, row label)
KD_FLAGS = dict((name, flags) for name, _, flags in run_study.STUDENTS)["kd"]


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", default=os.path.join(ROOT, "out", "compare_teachers"))
  parser.add_argument("--ks", default="6,30", help="Comma-separated k values of the KD students.")
  parser.add_argument("--seeds", type=int, default=3, help="Seeds per configuration.")
  parser.add_argument("--mix_flags", default="--mix_number=3 --cl_temperature=3 --cl_lambda=9",
                      help="MixNeXtVladModel flags of the mixture teacher (the final-submission script's).")
  run_study.add_run_arguments(parser)
  # Small enough for about 25 minutes on 2 shared CPU cores (docs/RESULTS.md).
  parser.set_defaults(num_train=2000, num_validate=600, max_frames=150, teacher_steps=600,
                      student_steps=600, eval_every_steps=600)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  ks, data = run_study.open_study(args, args.ks)
  teacher_flags = {"nextvlad": ["--model=NeXtVLADModel"],
                   "mix": ["--model=MixNeXtVladModel"] + args.mix_flags.split()}
  plan = [("%s_teacher" % name, None, seed, ["--model_type=teacher"] + teacher_flags[name])
          for seed in range(args.seeds) for name, _ in TEACHERS]
  plan += [("kd_from_%s_k%d" % (name, k), k, seed, KD_FLAGS + ["--model=NeXtVLADModel",
                                                              "--k_frame=%d" % k])
           for k in ks for name, _ in TEACHERS for seed in range(args.seeds)]
  run_study.log("plan: %d training runs (%d seeds), k in %s" % (len(plan), args.seeds, ks))
  finals = {}
  for index, (name, k, seed, flags) in enumerate(plan):
    run_name = "%s_seed%d" % (name, seed)
    train_dir = os.path.join(args.out_dir, "runs", run_name)
    argv = run_study.common_flags(args, data, seed) + flags
    if k is not None:
      teacher = name.split("_")[2]
      argv.append("--teacher_checkpoint=" + os.path.join(args.out_dir, "runs",
                                                         "%s_teacher_seed%d" % (teacher, seed)))
    run_study.log("[%d/%d] %s" % (index + 1, len(plan), run_name))
    run_study.run_training(run_name, train_dir, argv,
                           args.teacher_steps if k is None else args.student_steps)
    curve = run_study.evaluate_all(run_name, train_dir, data)
    finals.setdefault(name.split("_k")[0], {}).setdefault(k, []).append(curve[-1])

  rows = [("%s teacher (all frames)" % label, finals["%s_teacher" % name]) for name, label in TEACHERS]
  rows += [("KD student of the %s teacher" % label, finals["kd_from_%s" % name]) for name, label in TEACHERS]
  table = run_study.write_results(args.out_dir, rows, ks)
  paired = []
  for k in ks:
    gaps = {name: np.array([m["gap"] for m in finals["kd_from_%s" % name][k]]) for name, _ in TEACHERS}
    difference = gaps["mix"] - gaps["nextvlad"]
    paired.append(["k=%d" % k, " ".join("%+.4f" % d for d in difference),
                   "%+.4f ± %.4f" % (difference.mean(), difference.std(ddof=1) if len(difference) > 1 else 0),
                   "%d of %d" % (np.sum(difference > 0), len(difference))])
  paired_table = run_study.write_table(
      args.out_dir, "teachers_paired", "KD student GAP: mixture teacher minus single teacher, per seed",
      ["k", "per seed (seed 0, 1, ...)", "mean ± sample std", "seeds where the mixture's student is better"],
      paired)
  run_study.log("done; results in %s" % args.out_dir)
  print("\n" + table + "\n" + paired_table)


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
