"""docs/FIDELITY.md's ablation: the study (scripts/run_study.py) with the seed-faithful defaults, and again
with each improvement of ours switched on alone; teacher, plain-student and KD-student GAP at k = 6 and 30,
mean +- sample std over seeds. Every configuration is a resumable study in OUT_DIR/<name>, sharing one
generated data set; the table is written to OUT_DIR/ablation.md and .csv.

  .venv/bin/python scripts/run_ablation.py --out_dir out/ablation --seeds 3
"""

import argparse
import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import numpy as np  # noqa: E402

import run_study  # noqa: E402  (first: it sets up TensorFlow's graph mode and log level)
import eval as eval_lib  # noqa: E402
import utils  # noqa: E402

# (name, what it changes, flags for every run of its study, students trained at each k)
CONFIGURATIONS = [
    ("faithful", "the seed's numerics (defaults)", "", "uniform,strided,kd,kd_strided,kd_l2"),
    ("l2_input", "--input_preprocessing=l2 (per-frame L2 norm, no whitening)",
     "--input_preprocessing=l2", "uniform,kd"),
    ("glorot", "--weight_init=glorot", "--weight_init=glorot", "uniform,kd"),
    ("bn_decay_099", "--batchnorm_decay=0.99", "--batchnorm_decay=0.99", "uniform,kd"),
    ("bn_mask_padding", "--bn_mask_padding", "--bn_mask_padding", "uniform,kd"),
    ("global_clipping", "--gradient_clipping=global", "--gradient_clipping=global", "uniform,kd"),
]
def final_gap(train_dir):
  """GAP of a run's last evaluated checkpoint (eval/metrics-STEP.json, written by the study)."""
  steps = eval_lib.evaluated_steps(train_dir)
  if not steps:
    raise utils.InputError("%s has no evaluated checkpoint: run the study first" % train_dir)
  return utils.read_json(os.path.join(train_dir, "eval", "metrics-%d.json" % max(steps)),
                         eval_lib.METRICS_EXPECTED)["gap"]


def summarize(out_dir, configuration, names, ks, seeds):
  """{(student name or "teacher", k or None): (mean, sample std)} over the seeds of one study."""
  runs = os.path.join(out_dir, configuration, "runs")
  cells = {}
  for name, k in [("teacher", None)] + [(n, k) for n in names for k in ks]:
    gaps = [final_gap(os.path.join(runs, (name if k is None else "%s_k%d" % (name, k)) + "_seed%d" % s))
            for s in range(seeds)]
    cells[(name, k)] = (float(np.mean(gaps)), float(np.std(gaps, ddof=1)) if len(gaps) > 1 else 0.0)
  return cells


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out_dir", default=os.path.join(ROOT, "out", "ablation"))
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--ks", default="6,30")
  parser.add_argument("--only", default="", help="Comma-separated configuration names (default all).")
  parser.add_argument("--study_args", default="", help="More run_study.py arguments for every study.")
  args = parser.parse_args(argv)
  names = [n for n in args.only.split(",") if n] or [c[0] for c in CONFIGURATIONS]
  unknown = set(names) - {c[0] for c in CONFIGURATIONS}
  if unknown:
    raise utils.InputError("--only=%s: unknown configurations %s; expected names from %s"
                           % (args.only, sorted(unknown), ",".join(c[0] for c in CONFIGURATIONS)))
  data_dir = os.path.join(args.out_dir, "data")
  for name, _, flags, variants in CONFIGURATIONS:
    if name in names:
      run_study.log("ablation: %s" % name)
      run_study.main(["--out_dir", os.path.join(args.out_dir, name), "--data_dir", data_dir,
                      "--seeds", str(args.seeds), "--ks", args.ks, "--variants", variants,
                      "--extra_flags=" + flags] + args.study_args.split())
  ks = [int(k) for k in args.ks.split(",")]
  header = ["configuration", "teacher"] + ["%s k=%d" % (s, k) for s in ("student", "KD") for k in ks]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  rows = []
  for name, what, _, variants in CONFIGURATIONS:
    if not os.path.isdir(os.path.join(args.out_dir, name, "runs")):
      continue
    cells = summarize(args.out_dir, name, variants.split(","), ks, args.seeds)
    pairs = [("uniform", "kd", what)]
    if name == "faithful":
      pairs += [("strided", "kd_strided", what + ", strided-k students (the seed's sampling)")]
    for student, kd, label in pairs:
      values = [cells[("teacher", None)]] + [cells[(student, k)] for k in ks] + [cells[(kd, k)] for k in ks]
      rows.append([label] + ["%.4f" % m for m, _ in values] + ["%.4f" % s for _, s in values])
      lines.append("| %s | %s |" % (label, " | ".join("%.4f ± %.4f" % v for v in values)))
    if name == "faithful":
      values = [cells[("kd_l2", k)] for k in ks]
      label = what + ", --kd_regularization (KD only)"
      lines.append("| %s | |%s %s |" % (label, " |" * len(ks), " | ".join("%.4f ± %.4f" % v for v in values)))
      rows.append([label] + [""] * (1 + len(ks)) + ["%.4f" % m for m, _ in values]
                  + [""] * (1 + len(ks)) + ["%.4f" % s for _, s in values])
  table = "\n".join(lines)
  with open(os.path.join(args.out_dir, "ablation.md"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(args.out_dir, "ablation.csv"), "w") as f:
    csv.writer(f).writerows([header + ["std " + h for h in header[1:]]] + rows)
  print(table)


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
