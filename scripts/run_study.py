"""The paper's study end to end on generated YouTube-8M-format data (the README's main command).

Generates the data set, trains the teacher (all frames), caches its outputs on the training videos
once (cache_teacher.py), then for each k trains the plain uniform-k and random-k students and the
serial KD student (from the cache), evaluates every checkpoint on the validation split, and writes
into --out_dir:
  results.md / results.csv      GAP, mAP, Hit@1, PERR per model and k (mean +- std over seeds)
  results_gap.md / .csv         GAP only, one column per k: the layout of the paper's Table 1
  costs.md / costs.csv          trainable parameters, multiply-adds per video (graph float ops),
                                measured ms/video at inference on this machine
  gap_vs_step.png               GAP during training: teacher, students, KD students (the seed's picture)
  gap_vs_cost.png               GAP vs multiply-adds per video (the accuracy/cost frontier)
  kd_student_k<k>.csv           Kaggle submission of the KD student (validation videos)
Run again, it resumes: finished stages are skipped, unfinished training continues from its checkpoint.
--grid runs the full grid (all k, the six frame-selection baselines, serial and parallel KD, loss
variants, mse and kl, student-init-from-teacher, several seeds) and reports mean +- std over seeds.
"""

import argparse
import csv
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()

import config  # noqa: E402
import eval as eval_lib  # noqa: E402
import cache_teacher  # noqa: E402
import generate_synthetic_yt8m  # noqa: E402
import inference  # noqa: E402
import model_costs  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from utils import InputError  # noqa: E402

START = time.time()


def log(message):
  print("[study %5.1f min] %s" % ((time.time() - START) / 60, message), flush=True)


# Every run of the study (teacher, plain and KD students) takes the recommended settings over the seed's:
# numerics and distillation flags only, each measured in docs/DISTILLATION.md and listed in
# docs/FIDELITY.md. --extra_flags='' runs the seed's numerics and KD loss unchanged.
RECOMMENDED_FLAGS = "--flagfile=" + os.path.join(ROOT, "configs", "recommended.flags")
# --model: each family's --model_flags when none are given, sized for the generated data on 2 cores
# (NeXtVLAD's are add_run_arguments' default).
FAMILY_FLAGS = {"HierarchicalRnnModel": "--hrnn_cells=128 --hrnn_layers=1",
                "NetVLADModelLF": "--netvlad_cluster_size=16 --netvlad_hidden_size=128",
                "LstmModel": "--lstm_cells=128 --lstm_layers=1",
                "DbofModel": "--dbof_cluster_size=512 --dbof_hidden_size=128"}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", default=os.path.join(ROOT, "out", "study"))
  parser.add_argument("--grid", action="store_true", help="The full grid (hours on 2 cores).")
  parser.add_argument("--ks", default=None, help="Comma-separated k values (default 6,30; grid 6,10,15,20,30).")
  parser.add_argument("--seeds", type=int, default=None, help="Seeds per configuration (default 1; grid 3).")
  parser.add_argument("--variants", default=None,
                      help="Comma-separated students to train at each k, from: %s (default uniform,random,kd; "
                      "grid all). uniform and kd are always needed: the cost table and plots use them."
                      % ",".join(STUDENT_NAMES))
  add_run_arguments(parser)
  return parse_family(parser, argv)


def parse_family(parser, argv):
  """Parses a study's arguments, --model included: another family than NeXtVLAD gets its FAMILY_FLAGS
  as --model_flags unless they were given."""
  parser.add_argument("--model", default="NeXtVLADModel", choices=["NeXtVLADModel"] + sorted(FAMILY_FLAGS),
                      help="The family of the teacher and every student; --model_flags default to its "
                      "FAMILY_FLAGS.")
  args = parser.parse_args(argv)
  if args.model != "NeXtVLADModel":  # a NeXtVLAD study keeps the flags (and study.json) it always had
    given = args.model_flags != parser.get_default("model_flags")
    args.model_flags = "--model=%s %s" % (args.model, args.model_flags if given else FAMILY_FLAGS[args.model])
  return args


def add_run_arguments(parser):
  """The data, training and model options of every study on generated data (--out_dir, --ks and
  --seeds are the study's own)."""
  # Data (generated): YT8M format at reduced feature sizes so that the study fits on 2 CPU cores.
  parser.add_argument("--num_train", type=int, default=6000)
  parser.add_argument("--num_validate", type=int, default=1500)
  parser.add_argument("--num_classes", type=int, default=200)
  parser.add_argument("--rgb_size", type=int, default=64)
  parser.add_argument("--audio_size", type=int, default=16)
  parser.add_argument("--max_frames", type=int, default=300)
  parser.add_argument("--data_seed", type=int, default=0)
  parser.add_argument("--evidence_strength", type=float, default=1.0,
                      help="Generator: topic evidence relative to its YouTube-8M-calibrated default.")
  shape = generate_synthetic_yt8m.DEFAULT_SHAPE
  parser.add_argument("--min_frames", type=int, default=20, help="Generator: shortest video (frames).")
  parser.add_argument("--segments_per_topic", default="%d,%d" % shape.segments_per_topic,
                      help="Generator: LO,HI evidence segments per topic.")
  parser.add_argument("--segment_fraction", default="%g,%g" % shape.segment_fraction,
                      help="Generator: LO,HI length of a segment as a fraction of its video.")
  parser.add_argument("--short_fraction", type=float, default=shape.short_fraction,
                      help="Generator: share of short videos (20-120 s).")
  parser.add_argument("--length_median", type=float, default=shape.length_median,
                      help="Generator: median length (seconds) of the other videos.")
  # Training.
  parser.add_argument("--teacher_steps", type=int, default=2000)
  parser.add_argument("--student_steps", type=int, default=2000)
  parser.add_argument("--eval_every_steps", type=int, default=250)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--model_flags", default="--groups=4 --nextvlad_cluster_size=16 "
                      "--nextvlad_hidden_size=128 --expansion=2 --gating_reduction=4 --drop_rate=0.3",
                      help="NeXtVLAD flags shared by teacher and students.")
  parser.add_argument("--learning_rate", type=float, default=0.002)
  parser.add_argument("--extra_flags", default=RECOMMENDED_FLAGS,
                      help="train.py flags appended to every run (teacher and students); default: the "
                      "recommended configs/recommended.flags; --extra_flags='' runs the seed's numerics "
                      "and KD loss unchanged.")
  parser.add_argument("--data_dir", default=None, help="Generated data folder (default OUT_DIR/data); "
                      "studies with the same data settings can share it.")


# -- what to train ------------------------------------------------------------------------------------------
# KD students read uniform-k frames: docs/FIDELITY.md's ablation against the seed's strided positions.
KD_SAMPLING = "uniform"
_KD = ["--model_type=kd", "--frame_sampling=" + KD_SAMPLING]
# (name, row label, flags) of every student the study can train at each k, in table order.
STUDENTS = [
    ("uniform", "uniform-k student", ["--model_type=student", "--frame_sampling=uniform"]),
    ("random", "random-k student", ["--model_type=student", "--frame_sampling=random"]),
    ("kd", "KD student (serial, L_rep+L_pred+L_CE)", _KD),
    ("strided", "strided-k student (the seed's positions)", ["--model_type=student", "--frame_sampling=strided"]),
    ("kd_strided", "KD student, strided-k frames (the seed's)", ["--model_type=kd", "--frame_sampling=strided"]),
    ("kd_l2", "KD student, with its L2 penalty in the loss", _KD + ["--kd_regularization"])] + [
    (m, "%s-k student" % m.replace("_", "-"), ["--model_type=student", "--frame_sampling=" + m])
    for m in ("first", "middle", "last", "first_middle_last")] + [
    ("kd_parallel", "KD student (parallel, all three)", _KD + ["--kd_mode=parallel"]),
    ("kd_rep", "KD L_rep only", _KD + ["--ce_weight=0", "--pred_weight=0"]),
    ("kd_pred", "KD L_pred only", _KD + ["--ce_weight=0", "--rep_weight=0"]),
    ("kd_rep_ce", "KD L_rep+L_CE", _KD + ["--pred_weight=0"]),
    ("kd_pred_ce", "KD L_pred+L_CE", _KD + ["--rep_weight=0"]),
    ("kd_kl", "KD all three, L_pred=kl (T=2)", _KD + ["--pred_loss=kl", "--temperature=2"]),
    ("kd_kl1", "KD all three, L_pred=kl (T=1)", _KD + ["--pred_loss=kl", "--temperature=1"]),
    ("kd_kl4", "KD all three, L_pred=kl (T=4)", _KD + ["--pred_loss=kl", "--temperature=4"]),
    ("kd_init", "KD all three, student initialised from teacher", _KD + ["--student_init_from_teacher"]),
    ("kd_rep_init", "KD L_rep only, student initialised from teacher",
     _KD + ["--ce_weight=0", "--pred_weight=0", "--student_init_from_teacher"]),
    ("kd_init_ce", "L_CE only, student initialised from teacher",
     _KD + ["--pred_weight=0", "--rep_weight=0", "--student_init_from_teacher"]),
]
STUDENT_NAMES = [name for name, _, _ in STUDENTS]
DEFAULT_STUDENTS = ("uniform", "random", "kd")


# -- stages ---------------------------------------------------------------------------------------------
def refuse_changes(wanted, recorded, where):
  """InputError listing the flags whose values differ from what `where` was made with."""
  changed = ["--%s=%s (%s has %s)" % (k, v, os.path.basename(where), recorded.get(k))
             for k, v in sorted(wanted.items()) if recorded.get(k) != v]
  if changed:
    raise InputError("%s was made with other settings: %s; use another --out_dir"
                     % (where, "; ".join(changed)))


def expand_flagfiles(flags_text):
  """The flags of `flags_text` with each --flagfile=PATH replaced by the file's flags (comments and
  blank lines dropped): what the runs were trained with, even after the file changes."""
  expanded = []
  for flag in flags_text.split():
    if flag.startswith("--flagfile="):
      path = flag.split("=", 1)[1]
      if not os.path.exists(path):
        raise InputError("%s: no such flag file" % flag)
      expanded += [line.strip() for line in open(path) if line.strip() and not line.strip().startswith("#")]
    else:
      expanded.append(flag)
  return " ".join(expanded)


def check_training_settings(args):
  """Runs are reused on a second invocation only if they were trained with the same settings."""
  path = os.path.join(args.out_dir, "study.json")
  wanted = {name: getattr(args, name) for name in ("teacher_steps", "student_steps", "eval_every_steps",
                                                   "batch_size", "model_flags", "learning_rate")}
  wanted["extra_flags"] = expand_flagfiles(args.extra_flags)
  if os.path.exists(path):
    refuse_changes(wanted, utils.read_json(path, "the settings run_study.py records"), path)
  else:
    utils.write_json_atomic(path, wanted)


STATS_EXPECTED = "the statistics generate_synthetic_yt8m.py writes"


def data_shape(args):
  """The generator's Shape of these arguments; InputError naming them if they are not one."""
  try:
    return generate_synthetic_yt8m.Shape([int(v) for v in args.segments_per_topic.split(",")],
                                         [float(v) for v in args.segment_fraction.split(",")],
                                         args.short_fraction, args.length_median)
  except ValueError as error:
    raise InputError("--segments_per_topic=%s --segment_fraction=%s --short_fraction=%s "
                     "--length_median=%s: %s" % (args.segments_per_topic, args.segment_fraction,
                                                 args.short_fraction, args.length_median, error))


def ensure_data(args):
  data_dir = args.data_dir or os.path.join(args.out_dir, "data")
  stats_path = os.path.join(data_dir, "stats.json")
  shape = data_shape(args)
  wanted = {"num_train": args.num_train, "num_validate": args.num_validate, "num_classes": args.num_classes,
            "rgb_size": args.rgb_size, "audio_size": args.audio_size, "max_frames": args.max_frames,
            "data_seed": args.data_seed, "evidence_strength": args.evidence_strength,
            "min_frames": min(args.min_frames, args.max_frames)}
  wanted.update(shape.describe())
  if os.path.exists(stats_path):
    made = utils.read_json(stats_path, STATS_EXPECTED)["parameters"]
    refuse_changes(wanted, dict(made, data_seed=made["seed"], **made["constants"]), data_dir)
    log("data: reusing %s" % data_dir)
  else:
    log("data: generating %d train / %d validate videos (%d classes, %d+%d dims, up to %d frames)"
        % (args.num_train, args.num_validate, args.num_classes, args.rgb_size, args.audio_size,
           args.max_frames))
    generate_synthetic_yt8m.generate(
        data_dir, num_train=args.num_train, num_validate=args.num_validate, num_test=0,
        num_classes=args.num_classes, rgb_size=args.rgb_size, audio_size=args.audio_size,
        max_frames=args.max_frames, shards_per_split=4, seed=args.data_seed,
        evidence_strength=args.evidence_strength, min_frames=args.min_frames, shape=shape)
  return {"train": os.path.join(data_dir, "frame", "train", "train*.tfrecord"),
          "validate": os.path.join(data_dir, "frame", "validate", "validate*.tfrecord"),
          "stats": utils.read_json(stats_path, STATS_EXPECTED)}


def common_flags(args, data, seed):
  return (["--train_data_pattern=" + data["train"], "--feature_names=rgb,audio",
           "--feature_sizes=%d,%d" % (args.rgb_size, args.audio_size),
           "--num_classes=%d" % args.num_classes, "--max_frames=%d" % args.max_frames,
           "--batch_size=%d" % args.batch_size, "--base_learning_rate=%g" % args.learning_rate,
           "--learning_rate_decay=0.8", "--learning_rate_decay_examples=%d" % (args.batch_size * 1000),
           "--num_epochs=0", "--export_model_steps=%d" % args.eval_every_steps,
           "--keep_checkpoint_max=1000", "--log_every_steps=100", "--num_readers=4",
           "--seed=%d" % seed] + args.model_flags.split() + args.extra_flags.split())


def latest_step(train_dir):
  checkpoint = tf.train.latest_checkpoint(train_dir) if os.path.isdir(train_dir) else None
  return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0


def run_training(name, train_dir, argv, steps):
  if latest_step(train_dir) >= steps:
    log("%s: trained (%d steps), skipping" % (name, latest_step(train_dir)))
    return
  log("%s: training to step %d in %s" % (name, steps, train_dir))
  started = time.time()
  train.main(["train.py", "--train_dir=" + train_dir, "--max_steps=%d" % steps] + argv)
  reached = latest_step(train_dir)
  if reached < steps:
    # train.py stops on Ctrl-C or SIGTERM with a checkpoint and returns: the study stops too, so that
    # a partial run is never evaluated as finished.
    raise SystemExit("error: %s stopped at step %d of %d (Ctrl-C or SIGTERM); run the same command again "
                     "to resume it" % (name, reached, steps))
  log("%s: trained in %.1f min" % (name, (time.time() - started) / 60))


def extra_flag(args, name):
  """The value of train.py flag `name` that --extra_flags (a --flagfile included) gives the runs."""
  train.FLAGS.unparse_flags()
  train.FLAGS(["train.py"] + args.extra_flags.split())
  value = train.FLAGS[name].value
  train.FLAGS.unparse_flags()
  return value


def teacher_cache_dir(args, data, seed):
  """Caches the seed's teacher on the training videos (once; a finished cache is reused), with its
  batch-norm statistics recomputed when the runs' flags ask for it (--precise_bn_batches)."""
  cache_dir = os.path.join(args.out_dir, "cache", "teacher_seed%d" % seed)
  started = time.time()
  manifest = cache_teacher.main(["cache_teacher.py", "--teacher_checkpoint=" + teacher_dir(args, seed),
                                 "--input_data_pattern=" + data["train"], "--cache_dir=" + cache_dir,
                                 "--batch_size=%d" % args.batch_size,
                                 "--precise_bn_batches=%d" % extra_flag(args, "precise_bn_batches")])
  log("teacher_seed%d: outputs cached in %s (%d videos, %.1f s)"
      % (seed, cache_dir, sum(s["records"] for s in manifest["shards"].values()), time.time() - started))
  return cache_dir


def teacher_dir(args, seed):
  return os.path.join(args.out_dir, "runs", "teacher_seed%d" % seed)


def evaluate_all(name, train_dir, data):
  """Evaluates every checkpoint of a run (once: results are cached as eval/metrics-STEP.json; a
  damaged one is skipped with a warning, as eval.py does)."""
  pending = eval_lib.pending(train_dir)
  if pending:
    evaluator = eval_lib.Evaluator(train_dir, data["validate"], batch_size=256, log_every_batches=1000)
    eval_lib.evaluate_each(evaluator, pending, skipped=set())
    evaluator.sess.close()
  curve = []
  for step in sorted(eval_lib.evaluated_steps(train_dir)):
    curve.append(utils.read_json(os.path.join(train_dir, "eval", "metrics-%d.json" % step),
                                 eval_lib.METRICS_EXPECTED))
  final = curve[-1]
  log("%s: GAP %.4f mAP %.4f Hit@1 %.4f PERR %.4f (step %d, %d videos)" % (
      name, final["gap"], final["map"], final["hit_at_one"], final["perr"], final["global_step"],
      final["num_videos"]))
  return curve


def train_run(args, data, name, k, seed, flags, caches, steps, progress=""):
  """Trains (or resumes) run <name>[_k<k>]_seed<seed> of the study with `flags` for `steps` steps (a
  serial KD run from the cache of its seed's teacher, written once into `caches`), then evaluates its
  checkpoints; returns (its train_dir, evaluate_all's curve)."""
  run_name = (name if k is None else "%s_k%d" % (name, k)) + "_seed%d" % seed
  train_dir = os.path.join(args.out_dir, "runs", run_name)
  argv = common_flags(args, data, seed) + flags
  if k is not None:
    argv.append("--k_frame=%d" % k)
  if "--model_type=kd" in flags and "--kd_mode=parallel" not in flags:
    if seed not in caches:
      caches[seed] = teacher_cache_dir(args, data, seed)
    argv += ["--teacher_checkpoint=" + teacher_dir(args, seed), "--teacher_cache=" + caches[seed]]
  log("%s%s" % (progress, run_name))
  run_training(run_name, train_dir, argv, steps)
  return train_dir, evaluate_all(run_name, train_dir, data)


# -- reports -------------------------------------------------------------------------------------------
METRICS = (("gap", "GAP"), ("map", "mAP"), ("hit_at_one", "Hit@1"), ("perr", "PERR"))


def _cell(values, key):
  numbers = [v[key] for v in values]
  if len(numbers) == 1:
    return "%.4f" % numbers[0]
  return "%.4f ± %.4f" % (np.mean(numbers), np.std(numbers, ddof=1))  # sample std over seeds


def write_table(out_dir, name, title, header, rows):
  """Writes <name>.csv and <name>.md (a Markdown table under `title`); returns the Markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  with open(os.path.join(out_dir, name + ".csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  table = "\n".join(lines) + "\n"
  with open(os.path.join(out_dir, name + ".md"), "w") as f:
    f.write("# %s\n\n%s" % (title, table))
  return table


def write_results(out_dir, rows, ks):
  """rows: list of (label, {k or None: [final metrics per seed]})."""
  header = ["model"] + ["%s k=%d" % (m, k) for k in ks for _, m in METRICS]
  cells = [[label] + [_cell(by_k.get(k) or by_k.get(None), key) for k in ks for key, _ in METRICS]
           for label, by_k in rows]
  write_table(out_dir, "results_gap", "Validation GAP per k (the paper's Table 1 layout)",
              ["model"] + ["GAP k=%d" % k for k in ks],
              [[label] + [_cell(by_k.get(k) or by_k.get(None), "gap") for k in ks] for label, by_k in rows])
  return write_table(out_dir, "results", "Results on the generated validation split", header, cells)


def write_costs(out_dir, costs):
  header = ["model", "frames read", "trainable parameters", "multiply-adds / video", "ms / video (CPU)"]
  rows = [[c["label"], str(c["frames"]), "{:,}".format(c["parameters"]), "{:,}".format(c["macs"]),
           "%.3f" % c["ms_per_video"]] for c in costs]
  return write_table(out_dir, "costs", "Cost per model (inference, batches of decoded videos on this CPU)",
                     header, rows)


def plot(out_dir, curves, finals, costs, ks):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  columns = min(3, len(ks))
  rows = -(-len(ks) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.5 * rows), squeeze=False)
  for ax in axes.flat[len(ks):]:
    ax.axis("off")
  labels = list(dict.fromkeys(label for label, _ in curves))  # one colour per model, in every panel
  colours = dict(zip(labels, plt.cm.tab20(np.linspace(0, 1, 20))[:len(labels)] if len(labels) > 10
                     else plt.cm.tab10(np.arange(len(labels)))))
  for ax, k in zip(axes.flat, ks):
    for label, curve in curves:
      if curve["k"] in (None, k):
        steps = [m["global_step"] for m in curve["metrics"]]
        ax.plot(steps, [m["gap"] for m in curve["metrics"]], marker="o", ms=3, label=label,
                color=colours[label], linestyle="--" if curve["k"] is None else "-")
    _finish(ax, "GAP during training, k=%d" % k, "training step", legend=False)
  handles, names = axes.flat[0].get_legend_handles_labels()
  if len(ks) < axes.size:  # in the first empty panel, else beside the panels
    axes.flat[len(ks)].legend(handles, names, loc="center", fontsize=8)
  else:
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
  _save(fig, os.path.join(out_dir, "gap_vs_step.png"))

  fig, ax = plt.subplots(figsize=(7, 5))
  by_label = {}
  for c in costs:
    by_label.setdefault(c["kind"], []).append((c["macs"], finals[c["label"]], c["frames"]))
  for kind, points in sorted(by_label.items()):
    points.sort()
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=kind)
    for macs, gap, frames in points:
      ax.annotate("%s" % frames, (macs, gap), fontsize=7, textcoords="offset points", xytext=(3, 3))
  ax.axhline(finals["teacher"], color="gray", linestyle=":", linewidth=1)
  ax.set_xscale("log")
  _finish(ax, "Accuracy / cost", "multiply-adds per video (log scale; labels: frames read)")
  _save(fig, os.path.join(out_dir, "gap_vs_cost.png"))


def _finish(ax, title, xlabel, legend=True):
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("validation GAP")
  ax.grid(alpha=0.3)
  if legend:
    ax.legend(fontsize=8)


def _save(fig, path):
  import matplotlib.pyplot as plt
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps a legend placed beside the panels
  plt.close(fig)


def parse_ks(ks_text, max_frames):
  try:
    ks = [int(k) for k in ks_text.split(",")]
  except ValueError:
    ks = []
  if not ks or not all(0 < k < max_frames for k in ks):
    raise InputError("--ks=%s: expected comma-separated frame counts between 1 and --max_frames-1 (%d)"
                     % (ks_text, max_frames - 1))
  return ks


def open_study(args, ks_text):
  """(ks, data) of the study in args.out_dir: --ks checked, the data generated or reused, the
  training settings recorded (or checked against those its runs were trained with)."""
  ks = parse_ks(ks_text, args.max_frames)
  os.makedirs(args.out_dir, exist_ok=True)
  data = ensure_data(args)
  check_training_settings(args)
  return ks, data


def main(argv=None):
  args = parse_args(argv)
  seeds = list(range(args.seeds or (3 if args.grid else 1)))
  names = args.variants.split(",") if args.variants else STUDENT_NAMES if args.grid else DEFAULT_STUDENTS
  if set(names) - set(STUDENT_NAMES) or "uniform" not in names or "kd" not in names:
    raise InputError("--variants=%s: expected names from %s, including uniform and kd"
                     % (args.variants, ",".join(STUDENT_NAMES)))
  students = [student for student in STUDENTS if student[0] in names]
  ks, data = open_study(args, args.ks or ("6,10,15,20,30" if args.grid else "6,30"))
  plan = [("teacher", None, seed, ["--model_type=teacher"]) for seed in seeds]
  for k in ks:
    for name, _, flags in students:
      plan += [(name, k, seed, flags) for seed in seeds]
  log("plan: %d training runs (%d seeds), k in %s" % (len(plan), len(seeds), ks))
  if args.extra_flags:
    log("flags of every run beyond the seed's: %s (docs/FIDELITY.md)" % args.extra_flags)
  results, curves, labels, caches = {}, [], dict((n, l) for n, l, _ in students), {}
  labels["teacher"] = "teacher (all frames)"
  for index, (name, k, seed, flags) in enumerate(plan):
    steps = args.teacher_steps if k is None else args.student_steps
    _, curve = train_run(args, data, name, k, seed, flags, caches, steps, "[%d/%d] " % (index + 1, len(plan)))
    results.setdefault(name, {}).setdefault(k, []).append(curve[-1])
    if seed == 0:
      curves.append((labels[name], {"k": k, "metrics": curve}))

  rows = [(labels[name], results[name]) for name in ["teacher"] + [n for n, _, _ in students]]
  table = write_results(args.out_dir, rows, ks)
  log("measuring model costs")
  teacher_flags = config.load_model_flags(teacher_dir(args, 0))
  costs = [dict(model_costs.measure(teacher_flags, None), label="teacher", kind="teacher (all frames)",
                frames=args.max_frames)]
  for k in ks:
    student_flags = config.load_model_flags(os.path.join(args.out_dir, "runs", "uniform_k%d_seed0" % k))
    cost = model_costs.measure(student_flags, k)
    for name in ("uniform", "kd"):
      costs.append(dict(cost, label="%s k=%d" % (name, k), kind=labels[name], frames=k))
  finals = {"teacher": np.mean([m["gap"] for m in results["teacher"][None]])}
  for k in ks:
    for name in ("uniform", "kd"):
      finals["%s k=%d" % (name, k)] = np.mean([m["gap"] for m in results[name][k]])
  cost_table = write_costs(args.out_dir, costs)
  plot(args.out_dir, curves, finals, costs, ks)
  kaggle = os.path.join(args.out_dir, "kd_student_k%d.csv" % ks[0])
  if not os.path.exists(kaggle):
    inference.main(["inference.py", "--train_dir=" + os.path.join(args.out_dir, "runs", "kd_k%d_seed0" % ks[0]),
                    "--input_data_pattern=" + data["validate"], "--output_file=" + kaggle,
                    "--batch_size=256"])
  log("done in %.1f min; results in %s" % ((time.time() - START) / 60, args.out_dir))
  print("\n" + table + "\n" + cost_table)
  print("Plots: %s, %s\nKaggle CSV of the KD student: %s" % (
      os.path.join(args.out_dir, "gap_vs_step.png"), os.path.join(args.out_dir, "gap_vs_cost.png"), kaggle))


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
