"""The distillation diagnosis (docs/DISTILLATION.md): plain uniform-k students against serial KD students,
each numerics configuration on several generated data settings, with 3 seeds and k = 6 and 30.

  .venv/bin/python scripts/run_diagnosis.py --out_dir out/diagnosis
  .venv/bin/python scripts/run_diagnosis.py --out_dir out/diagnosis --settings study,short_segments \\
      --configs 'seed;decay099=--batchnorm_decay=0.99+--rep_loss=cosine' --seeds 1 --ks 6

Every (setting, configuration) is one scripts/run_study.py study (teacher, uniform-k student, KD student
from the teacher cache), teacher and students trained for the same short budget; the studies of one
setting share its generated data. Resumable: finished runs are reused. Writes diagnosis.md/.csv: per
setting and configuration the teacher's GAP, the plain and the KD student's at each k (mean ± sample
std over seeds) and KD − plain, with the mean and std of the per-seed paired differences.
"""

import argparse
import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import numpy as np  # noqa: E402

import run_ablation  # noqa: E402
import run_study  # noqa: E402
import utils  # noqa: E402

# (name, what it moves, run_study data arguments). Generator defaults (the study's data): 1-3 evidence
# segments per topic of 5-40% of the video, 8% short videos, median 200 s.
SETTINGS = [
    ("study", "the study's data (6,000 videos, 200 classes, 64+16 dims)", []),
    ("short_segments", "evidence in 1-2 short segments (1-10% of the video), 60 classes, 4,000 videos",
     ["--segments_per_topic=1,2", "--segment_fraction=0.01,0.1", "--num_classes=60", "--num_train=4000",
      "--num_validate=1000"]),
    ("short_videos", "60% short videos (20-120 s), median 60 s for the rest, 100 classes, 4,000 videos",
     ["--short_fraction=0.6", "--length_median=60", "--min_frames=10", "--num_classes=100",
      "--num_train=4000", "--num_validate=1000"]),
    ("small_train", "1,000 training videos (the teacher over-fits), 100 classes",
     ["--num_train=1000", "--num_validate=1000", "--num_classes=100"]),
    ("many_classes", "500 classes, 32+8 dims, 6,000 videos, twice the training steps",
     ["--num_classes=500", "--rgb_size=32", "--audio_size=8", "--steps_factor=2"]),
]
# (name, what, train.py flags for every run of the study).
CONFIGS = [
    ("seed", "the seed's numerics and KD loss (the defaults)", ""),
    ("recommended", "configs/recommended.flags", run_study.RECOMMENDED_FLAGS),
]
VARIANTS = ("uniform", "kd")


def parse_configs(text):
  """--configs: names from CONFIGS, or NAME=FLAGS entries (a probe: FLAGS, '+'-separated, for every run),
  separated by ';'."""
  entries = [e for e in text.split(";") if e]
  probes = [(e.split("=", 1)[0], e.split("=", 1)[1].replace("+", " "), e.split("=", 1)[1].replace("+", " "))
            for e in entries if "=" in e]
  named = lookup(CONFIGS, ",".join(e for e in entries if "=" not in e), "configs") if any(
      "=" not in e for e in entries) else []
  return named + probes


def lookup(table, text, what):
  names = [n for n in text.split(",") if n]
  known = [entry[0] for entry in table]
  unknown = sorted(set(names) - set(known))
  if unknown or not names:
    raise utils.InputError("--%s=%s: unknown %s; expected names from %s" % (what, text, unknown, ",".join(known)))
  return [entry for entry in table if entry[0] in names]


def study_argv(args, setting, config):
  """run_study.py's arguments for one (setting, configuration)."""
  data_args = [a for a in setting[2] if not a.startswith("--steps_factor=")]
  factor = next((int(a.split("=")[1]) for a in setting[2] if a.startswith("--steps_factor=")), 1)
  steps = args.steps * factor
  return (["--out_dir", os.path.join(args.out_dir, setting[0], config[0]),
           "--data_dir", os.path.join(args.out_dir, setting[0], "data"), "--seeds", str(args.seeds),
           "--ks", args.ks, "--variants", ",".join(VARIANTS), "--teacher_steps", str(steps),
           "--student_steps", str(steps), "--eval_every_steps", str(steps),
           "--extra_flags=" + config[2]] + data_args)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out_dir", default=os.path.join(ROOT, "out", "diagnosis"))
  parser.add_argument("--settings", default=",".join(s[0] for s in SETTINGS))
  parser.add_argument("--configs", default=",".join(c[0] for c in CONFIGS),
                      help="Configurations, ';'-separated: names from %s, or NAME=FLAGS with the train.py "
                      "flags joined by '+' (a probe)." % ",".join(c[0] for c in CONFIGS))
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--ks", default="6,30")
  parser.add_argument("--steps", type=int, default=625,
                      help="Training steps of every run, teacher and students (a setting may double it).")
  parser.add_argument("--study_args", default="", help="More run_study.py arguments (tests: tiny sizes).")
  args = parser.parse_args(argv)
  settings, configs = lookup(SETTINGS, args.settings, "settings"), parse_configs(args.configs)
  ks = [int(k) for k in args.ks.split(",")]
  header = ["setting", "configuration", "teacher"] + [
      "%s k=%d" % (what, k) for k in ks for what in ("plain", "KD", "KD - plain", "paired")]
  csv_header = ["setting", "configuration", "teacher"]
  for k in ks:
    csv_header += ["%s k=%d" % (w, k) for w in ("plain", "KD", "KD - plain", "paired mean", "paired std",
                                                 "plain std", "KD std")]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  rows = []
  for setting in settings:
    for config in configs:
      run_study.log("diagnosis: %s / %s" % (setting[0], config[0]))
      run_study.main(study_argv(args, setting, config) + args.study_args.split())
      out = os.path.join(args.out_dir, setting[0], config[0])
      cells = run_ablation.summarize(out, "", VARIANTS, ks, args.seeds)
      row = [setting[0], config[0], "%.4f ± %.4f" % cells[("teacher", None)]]
      csv_row = [setting[0], config[0], cells[("teacher", None)][0]]
      for k in ks:
        plain, kd = cells[("uniform", k)], cells[("kd", k)]
        paired = [run_ablation.final_gap(os.path.join(out, "runs", "kd_k%d_seed%d" % (k, s))) -
                  run_ablation.final_gap(os.path.join(out, "runs", "uniform_k%d_seed%d" % (k, s)))
                  for s in range(args.seeds)]
        spread = float(np.std(paired, ddof=1)) if len(paired) > 1 else 0.0
        row += ["%.4f ± %.4f" % plain, "%.4f ± %.4f" % kd, "%+.4f" % (kd[0] - plain[0]),
                "%+.4f ± %.4f" % (float(np.mean(paired)), spread)]
        csv_row += [plain[0], kd[0], kd[0] - plain[0], float(np.mean(paired)), spread, plain[1], kd[1]]
      lines.append("| " + " | ".join(row) + " |")
      rows.append(csv_row)
      table = "\n".join(lines)   # written after every study: a stopped diagnosis keeps what it measured
      with open(os.path.join(args.out_dir, "diagnosis.md"), "w") as f:
        f.write(table + "\n")
      with open(os.path.join(args.out_dir, "diagnosis.csv"), "w") as f:
        csv.writer(f).writerows([csv_header] + rows)
  print(table)
  return rows


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
