"""The seed's three stages on real YouTube-8M frame-level data, at full size with its exact flags:
teacher (all frames), plain student (k frames), KD student; then eval of each on the validation
shards and a Kaggle CSV of the KD student.

Download 1% of the 2018 frame-level data first (about 2 x 15 GB; not possible from a sandbox):
  mkdir -p $DATA/train $DATA/validate
  cd $DATA/train    && curl data.yt8m.org/download.py | shard=1,100 partition=2/frame/train mirror=us python3
  cd $DATA/validate && curl data.yt8m.org/download.py | shard=1,100 partition=2/frame/validate mirror=us python3
Then:
  python scripts/real_data_recipe.py --data_dir=$DATA --out_dir=runs/yt8m --k=6 --num_gpu=1
Every stage is a plain command (printed before it runs), resumable: run the script again to go on
(an interrupted stage resumes from its checkpoint; a stage with eval/metrics.json is done and skipped).
--extra_flags appends flags to every training command (a flag given twice takes its last value),
e.g. smaller models for a dry run.
"""

import argparse
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import utils  # noqa: E402

# The seed's command line, minus what each stage sets (data, train_dir, k_frame, model_type, steps).
SEED_FLAGS = ('--feature_names=rgb,audio --feature_sizes=1024,128 --groups=8 --nextvlad_cluster_size=128 '
              '--nextvlad_hidden_size=2048 --expansion=2 --gating_reduction=8 --drop_rate=0.5 '
              '--model=NeXtVLADModel --num_readers=8 --learning_rate_decay_examples=2000000 '
              '--video_level_classifier_model=LogisticModel --label_loss=CrossEntropyLoss '
              '--frame_features=True --batch_size=80 --base_learning_rate=0.0002 --learning_rate_decay=0.8 '
              '--l2_penalty=1e-5 --export_model_steps=200 --start_new_model=False')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", required=True, help="Holds train/*.tfrecord and validate/*.tfrecord.")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--k", type=int, default=6, help="Frames the students read.")
  parser.add_argument("--teacher_steps", type=int, default=700000)
  parser.add_argument("--student_steps", type=int, default=700000)
  parser.add_argument("--num_gpu", type=int, default=1)
  parser.add_argument("--eval_batch_size", type=int, default=512)
  parser.add_argument("--extra_flags", default="", help="Appended to every training command.")
  parser.add_argument("--eval_flags", default="", help="Appended to every eval/inference command.")
  return parser.parse_args(argv)


def run(command):
  print("$ " + " ".join(shlex.quote(c) for c in command), flush=True)
  subprocess.run(command, check=True, cwd=ROOT)


def main(argv=None):
  args = parse_args(argv)
  train_pattern = os.path.join(args.data_dir, "train", "train*.tfrecord")
  validate_pattern = os.path.join(args.data_dir, "validate", "validate*.tfrecord")
  python = sys.executable
  stages = [
      ("teacher", ["--model_type=teacher", "--k_frame=300"], args.teacher_steps),
      ("student_k%d" % args.k, ["--model_type=student", "--k_frame=%d" % args.k], args.student_steps),
      ("kd_k%d" % args.k, ["--model_type=KD", "--k_frame=%d" % args.k,
                           "--teacher_checkpoint=" + os.path.join(args.out_dir, "teacher")], args.student_steps),
  ]
  for name, flags, steps in stages:
    train_dir = os.path.join(args.out_dir, name)
    if os.path.exists(os.path.join(train_dir, "eval", "metrics.json")):
      # Trained and evaluated: training again would add --num_epochs more epochs (--max_step=700000
      # is not reached on 1% of the data) and change the teacher under a KD stage.
      print("%s: trained and evaluated already (%s/eval/metrics.json), skipping" % (name, train_dir))
      continue
    run([python, "train.py"] + shlex.split(SEED_FLAGS) + flags + [
        "--train_data_pattern=" + train_pattern, "--train_dir=" + train_dir, "--max_step=%d" % steps,
        "--num_gpu=%d" % args.num_gpu] + shlex.split(args.extra_flags))
    run([python, "eval.py", "--train_dir=" + train_dir, "--eval_data_pattern=" + validate_pattern,
         "--run_once", "--batch_size=%d" % args.eval_batch_size] + shlex.split(args.eval_flags))
  kd_dir = os.path.join(args.out_dir, "kd_k%d" % args.k)
  predictions = os.path.join(args.out_dir, "kd_k%d_predictions.csv" % args.k)
  if not os.path.exists(predictions):
    run([python, "inference.py", "--train_dir=" + kd_dir, "--input_data_pattern=" + validate_pattern,
         "--output_file=" + predictions, "--batch_size=%d" % args.eval_batch_size] + shlex.split(args.eval_flags))
  print("Results: %s/*/eval/metrics.json" % args.out_dir)


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
