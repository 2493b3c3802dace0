"""The seed's command line (its README; docs/BACKGROUND.md, The seed) runs as written, with its data path replaced,
and its three training stages (teacher, student, KD) run end to end."""

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import config
from helpers import ROOT, frame_record, write_records

SEED_COMMAND = (
    'python train.py --feature_names="rgb,audio" --feature_sizes="1024,128" --groups=8 '
    '--nextvlad_cluster_size=128 --nextvlad_hidden_size=2048 --expansion=2 --gating_reduction=8 '
    '--drop_rate=0.5 --model=NeXtVLADModel --num_readers=8 --learning_rate_decay_examples 2000000  '
    '--video_level_classifier_model=LogisticModel --label_loss=CrossEntropyLoss '
    '--train_data_pattern=/home/disk3/a_zhongzhanhui/yt8m_dataset/train_all/train*.tfrecord '
    '--frame_features=True   --batch_size=80 --base_learning_rate=0.0002  --learning_rate_decay=0.8 '
    '--l2_penalty=1e-5 --max_step=700000 --num_gpu=2 --export_model_steps=200 '
    '--train_dir=nextvlad_8g_5l2_5drop_128k_2048_2x80_logistic  --visible_gpu="1"  '
    '--start_new_model=False --k_frame=30  --model_type=KD')


@pytest.fixture(scope="module")
def full_size_data(tmp_path_factory):
  """80 videos with real feature sizes (1024 + 128), 20-60 frames, 3862 classes."""
  root = tmp_path_factory.mktemp("seed_data")
  rng = np.random.RandomState(0)
  records = []
  for i in range(80):
    n = rng.randint(20, 61)
    records.append(frame_record("s%03d" % i, sorted(rng.choice(3862, 3, replace=False).tolist()),
                                {"rgb": rng.randint(0, 256, (n, 1024)), "audio": rng.randint(0, 256, (n, 128))}))
  write_records(str(root / "train0000.tfrecord"), records)
  return str(root / "train*.tfrecord")


def seed_argv(data_pattern, train_dir, *changes):
  """The seed's command with its data path and train_dir replaced, then `changes` appended (a flag
  given twice takes its last value)."""
  argv = shlex.split(SEED_COMMAND)[1:]
  argv = ["--train_data_pattern=" + data_pattern if a.startswith("--train_data_pattern") else
          "--train_dir=" + train_dir if a.startswith("--train_dir") else a for a in argv]
  return [sys.executable, os.path.join(ROOT, "train.py")] + argv + list(changes)


def run(argv):
  result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


@pytest.mark.slow
def test_seed_three_stages(full_size_data, tmp_path):
  """Teacher, the seed's student spelling (--model_type=teacher --k_frame=6) and KD, small model."""
  small = ["--groups=2", "--nextvlad_cluster_size=8", "--nextvlad_hidden_size=32", "--batch_size=16",
           "--max_step=3"]
  teacher, student, kd = (str(tmp_path / name) for name in ("teacher", "student", "kd"))
  run(seed_argv(full_size_data, teacher, "--model_type=teacher", "--k_frame=300", *small))
  log = run(seed_argv(full_size_data, student, "--model_type=teacher", "--k_frame=6", *small))
  assert "a 6-frame model in scope teacher/" in log
  run(seed_argv(full_size_data, kd, "--teacher_checkpoint=" + teacher, *small))   # --model_type=KD
  assert config.load_model_flags(teacher)["k_frame"] == 300
  assert config.frames_read(config.load_model_flags(student)) == 6
  kd_flags = config.load_model_flags(kd)
  assert kd_flags["model_type"] == "kd" and config.frames_read(kd_flags) == 30
  assert tf.train.latest_checkpoint(kd).endswith("-3")


# The seed's scripts/train_nextvlad_local.sh, its three command lines with ${...} expanded.
LOCAL_PARAMETERS = ("--groups=8 --nextvlad_cluster_size=128 --nextvlad_hidden_size=2048 --expansion=2 "
                    "--gating_reduction=8 --drop_rate=0.5")
LOCAL_SCRIPT = [
    "python train.py {p} --model=NeXtVLADModel  --num_readers=8 --learning_rate_decay_examples 2000000 "
    "--video_level_classifier_model=LogisticModel --label_loss=CrossEntropyLoss --start_new_model=False "
    "--train_data_pattern={data}/train*.tfrecord --train_dir={train_dir} --frame_features=True "
    '--feature_names="rgb,audio" --feature_sizes="1024,128" --batch_size=80 --base_learning_rate=0.0002 '
    "--learning_rate_decay=0.8 --l2_penalty=1e-5 --max_step=700000 --num_gpu=2",
    "python eval.py {p} --batch_size=80 --video_level_classifier_model=LogisticModel --l2_penalty=1e-5 "
    "--label_loss=CrossEntropyLoss --eval_data_pattern={eval_path}/validate*.tfrecord --train_dir {train_dir} "
    "--run_once=True",
    "python inference.py --output_model_tgz {results}/{name}.tgz --output_file {results}/{name}.csv "
    "--input_data_pattern={test_path}/test*.tfrecord --train_dir {train_dir} --batch_size=80 --num_readers=8",
]


def script_argv(line, **paths):
  argv = shlex.split(line.format(p=LOCAL_PARAMETERS, **paths))
  return [sys.executable, os.path.join(ROOT, argv[1])] + argv[2:]


@pytest.mark.slow
def test_seed_local_script_runs_as_written(full_size_data, tmp_path):
  """train at the seed's full size (stopped after 2 steps; its checkpoint holds 88,889,378 weights), eval
  with the architecture flags, inference writing the starter's model .tgz, which inference.py
  --input_model_tgz reads back to the same CSV."""
  data = os.path.dirname(full_size_data)
  name = "nextvlad_8g_5l2_5drop_128k_2048_2x80_logistic"
  paths = dict(data=data, eval_path=data, test_path=data, train_dir=str(tmp_path / name),
               results=str(tmp_path / "results"), name=name)
  os.symlink(os.path.join(data, "train0000.tfrecord"), str(tmp_path / "validate0000.tfrecord"))
  os.symlink(os.path.join(data, "train0000.tfrecord"), str(tmp_path / "test0000.tfrecord"))
  paths.update(eval_path=str(tmp_path), test_path=str(tmp_path))
  train_line, eval_line, inference_line = (script_argv(line, **paths) for line in LOCAL_SCRIPT)
  log = run(train_line + ["--max_step=2", "--log_every_steps=1"])
  assert "examples/sec" in log and "No GPU visible" in log
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(paths["train_dir"]))
  weights = sum(int(np.prod(s)) for n, s in reader.get_variable_to_shape_map().items()
                if n.startswith("teacher/") and "Adam" not in n and "moving_" not in n)
  assert weights == 88889378
  log = run(eval_line)
  assert "GAP" in log
  os.makedirs(paths["results"])
  run(inference_line)
  csv = open(os.path.join(paths["results"], name + ".csv")).read().splitlines()
  assert csv[0] == "VideoId,LabelConfidencePairs" and len(csv) == 81
  tgz = os.path.join(paths["results"], name + ".tgz")
  run([sys.executable, os.path.join(ROOT, "inference.py"), "--input_model_tgz=" + tgz,
       "--untar_model_dir=" + str(tmp_path / "untar"), "--output_file=" + str(tmp_path / "again.csv"),
       "--input_data_pattern=" + str(tmp_path / "test*.tfrecord"), "--batch_size=80"])
  assert open(str(tmp_path / "again.csv")).read().splitlines() == csv
  contradicting = subprocess.run(eval_line + ["--groups=4"], cwd=ROOT, capture_output=True, text=True)
  assert contradicting.returncode == 2
  assert contradicting.stderr.strip().splitlines()[-1] == (
      "error: --groups=4 but %s was trained with 8 (drop the flag or pass the trained value)"
      % paths["train_dir"])
