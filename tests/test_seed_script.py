"""The seed's scripts/train_nextvlad_local.sh (docs/BACKGROUND.md, The seed) runs as written at the seed's
full size: train, eval and inference (in its own file so that it runs beside test_seed_command.py)."""

import os
import shlex

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import eval as eval_program
import utils
from helpers import run_ok

EXPECTED_SECONDS = 220   # one full-size training step, eval and inference: started first (conftest.py)


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
  return shlex.split(line.format(p=LOCAL_PARAMETERS, **paths))[1:]   # [program, *args], "python" dropped


@pytest.mark.slow
def test_seed_local_script_runs_as_written(full_size_data, tmp_path, capsys):
  """train at the seed's full size (stopped after 2 steps; its checkpoint holds 88,889,378 weights), eval
  with the architecture flags, inference writing the starter's model .tgz."""
  data = os.path.dirname(full_size_data)
  name = "nextvlad_8g_5l2_5drop_128k_2048_2x80_logistic"
  paths = dict(data=data, eval_path=data, test_path=data, train_dir=str(tmp_path / name),
               results=str(tmp_path / "results"), name=name)
  os.symlink(os.path.join(data, "train0000.tfrecord"), str(tmp_path / "validate0000.tfrecord"))
  os.symlink(os.path.join(data, "train0000.tfrecord"), str(tmp_path / "test0000.tfrecord"))
  paths.update(eval_path=str(tmp_path), test_path=str(tmp_path))
  train_line, eval_line, inference_line = (script_argv(line, **paths) for line in LOCAL_SCRIPT)
  log = run_ok(*train_line, "--max_step=2", "--log_every_steps=1").stderr
  assert "examples/sec" in log and "No GPU visible" in log
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(paths["train_dir"]))
  weights = sum(int(np.prod(s)) for n, s in reader.get_variable_to_shape_map().items()
                if n.startswith("teacher/") and "Adam" not in n and "moving_" not in n)
  assert weights == 88889378
  log = run_ok(*eval_line).stderr
  assert "GAP" in log
  os.makedirs(paths["results"])
  run_ok(*inference_line)
  csv = open(os.path.join(paths["results"], name + ".csv")).read().splitlines()
  assert csv[0] == "VideoId,LabelConfidencePairs" and len(csv) == 81
  # The archive holds the checkpoint (its weights and Adam slots, float32, barely compressible);
  # reading one back is tested at a small size (test_entry_points.py).
  assert os.path.getsize(os.path.join(paths["results"], name + ".tgz")) > 3 * 4 * 88889378 * 0.9
  # The same eval line contradicting the run's architecture, through the harness in process (eval.py
  # has just run whole in a fresh interpreter).
  with pytest.raises(SystemExit) as stopped:
    utils.run_cli(eval_program.main, eval_line + ["--groups=4"])
  assert stopped.value.code == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      "error: --groups=4 but %s was trained with 8 (drop the flag or pass the trained value)"
      % paths["train_dir"])
