"""The real-data recipe driver, as its docstring shows it (a fresh interpreter), on tiny generated data
with small model flags."""

import csv
import json
import os

import pytest

from helpers import run_ok

pytestmark = pytest.mark.slow

EXPECTED_SECONDS = 90   # seven programs in fresh interpreters, in one test: started early (conftest.py)


def test_recipe_runs_three_stages_eval_and_inference(frame_data, tmp_path):
  data_dir = tmp_path / "yt8m"
  for split in ("train", "validate"):
    (data_dir / split).mkdir(parents=True)
  root = frame_data["root"]
  for name in os.listdir(str(root)):
    split = "train" if name.startswith("train") else "validate"
    os.symlink(str(root / name), str(data_dir / split / name))
  small = ("--feature_sizes=16,4 --num_classes=8 --max_frames=24 --groups=2 --nextvlad_cluster_size=8 "
           "--nextvlad_hidden_size=32 --batch_size=16 --num_readers=2")
  out_dir = tmp_path / "runs"
  recipe = lambda: run_ok(
      "scripts/real_data_recipe.py", "--data_dir=" + str(data_dir), "--out_dir=" + str(out_dir), "--k=4",
      "--teacher_steps=4", "--student_steps=3", "--eval_batch_size=64", "--extra_flags=" + small,
      "--eval_flags=--feature_sizes=16,4").stdout
  recipe()
  for name, step in (("teacher", 4), ("student_k4", 3), ("kd_k4", 3)):
    metrics = json.load(open(str(out_dir / name / "eval" / "metrics.json")))
    assert metrics["global_step"] == step and metrics["num_videos"] == 150
  rows = list(csv.reader(open(str(out_dir / "kd_k4_predictions.csv"))))
  assert rows[0] == ["VideoId", "LabelConfidencePairs"] and len(rows) == 151
  checkpoints = sorted(os.listdir(str(out_dir / "teacher")))
  out = recipe()  # again: every stage is done, nothing trains or is rewritten
  assert out.count("skipping") == 3 and "$ " not in out
  assert sorted(os.listdir(str(out_dir / "teacher"))) == checkpoints
