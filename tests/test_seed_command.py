"""The seed's command line (its README; docs/BACKGROUND.md, The seed) runs as written, with its data path replaced,
and its three training stages (teacher, student, KD) run end to end."""

import shlex

import pytest
import tensorflow.compat.v1 as tf

import config
from helpers import run_ok

EXPECTED_SECONDS = 50   # the seed's three stages in one test: started early (conftest.py)

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


def seed_argv(data_pattern, train_dir, *changes):
  """The seed's command with its data path and train_dir replaced, then `changes` appended (a flag
  given twice takes its last value)."""
  argv = shlex.split(SEED_COMMAND)[1:]
  argv = ["--train_data_pattern=" + data_pattern if a.startswith("--train_data_pattern") else
          "--train_dir=" + train_dir if a.startswith("--train_dir") else a for a in argv]
  return ["train.py"] + argv + list(changes)


def run(argv):
  """Runs [program, *args] in a fresh interpreter; its log (stderr)."""
  return run_ok(*argv).stderr


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
