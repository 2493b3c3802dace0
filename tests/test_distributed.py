"""Distributed training on TensorFlow's own runtime: 1 parameter server + 2 workers on 127.0.0.1."""

import os
import re
import sys
import time

import pytest
import tensorflow.compat.v1 as tf

import eval as eval_lib
import helpers
from helpers import ROOT, run_ps_and_two_workers, train_args


def _steps_run(log):
  return int(log.split("Training stopped at global step")[1].split("; ")[1].split(" steps")[0])


@pytest.mark.slow
def test_ps_and_two_workers_train_a_checkpoint_eval_reads(frame_data, tmp_path):
  train_dir = tmp_path / "dist"
  args = [sys.executable, os.path.join(ROOT, "train.py")] + train_args(
      frame_data, train_dir, "--model_type=teacher", "--max_steps=400", "--log_every_steps=50")[1:]
  logs = run_ps_and_two_workers(args, tmp_path)
  checkpoint = tf.train.latest_checkpoint(str(train_dir))
  assert checkpoint is not None and int(checkpoint.rsplit("-", 1)[1]) >= 400
  steps_by_worker = [_steps_run(log) for log in logs]
  # Asynchronous updates: a worker may run a step or two past --max_steps before it sees the global step.
  assert min(steps_by_worker) > 0 and 400 <= sum(steps_by_worker) <= 410, steps_by_worker
  result = eval_lib.Evaluator(str(train_dir), frame_data["validate"], 64).evaluate(checkpoint)
  assert result["num_videos"] == 150 and result["gap"] > 0


def _last_logged_step(path):
  steps = re.findall(r"step (\d+) \|", open(str(path)).read())
  return int(steps[-1]) if steps else 0


@pytest.mark.slow
def test_restarted_chief_continues_from_live_parameter_servers(frame_data, tmp_path):
  """The chief is killed (SIGKILL); worker 1 trains on far past the chief's last checkpoint and is
  killed too; both restart. The chief must continue from the parameter servers' state (no rollback
  to its checkpoint), take over its stale train_dir lock, and the restarted worker must rejoin."""
  cluster = helpers.loopback_cluster()
  train_dir = tmp_path / "dist"
  def args(max_steps):
    return [sys.executable, os.path.join(ROOT, "train.py")] + train_args(
        frame_data, train_dir, "--model_type=teacher", "--max_steps=%d" % max_steps,
        "--log_every_steps=10", "--export_model_steps=20")[1:]
  ps = helpers.starter(cluster, args(0), tmp_path)("ps", 0)
  try:
    start = helpers.starter(cluster, args(100000), tmp_path)
    chief, worker = start("worker", 0, "chief_first"), start("worker", 1, "worker_first")
    deadline = time.time() + 180
    while not tf.train.latest_checkpoint(str(train_dir)) and time.time() < deadline:
      time.sleep(0.2)
    chief.kill()
    chief.wait()
    checkpoint_step = int(tf.train.latest_checkpoint(str(train_dir)).rsplit("-", 1)[1])
    while _last_logged_step(tmp_path / "worker_first.log") < checkpoint_step + 40 and time.time() < deadline:
      time.sleep(0.2)
    worker.kill()
    worker.wait()
    reached = _last_logged_step(tmp_path / "worker_first.log")
    assert reached >= checkpoint_step + 40, open(str(tmp_path / "worker_first.log")).read()[-3000:]
    assert (train_dir / ".lock").exists(), "the killed chief left its lock"
    start = helpers.starter(cluster, args(reached + 30), tmp_path)
    restarted = [start("worker", 0, "chief_again"), start("worker", 1, "worker_again")]
    for process in restarted:
      process.wait(timeout=max(1, deadline + 120 - time.time()))
    logs = [open(str(tmp_path / (name + ".log"))).read() for name in ("chief_again", "worker_again")]
    assert [p.returncode for p in restarted] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  finally:
    ps.kill()
    ps.wait()
  continued = re.search(r"continuing from the parameter servers' live state at global step (\d+)", logs[0])
  assert continued and int(continued.group(1)) >= reached, logs[0][-3000:]
  assert "Restoring parameters from" not in logs[0], "no rollback to the chief's checkpoint"
  assert "took over the lock left by pid %d" % chief.pid in logs[0]
  assert _steps_run(logs[1]) > 0, "the restarted worker rejoined and trained"
  final = int(tf.train.latest_checkpoint(str(train_dir)).rsplit("-", 1)[1])
  assert reached + 30 <= final <= reached + 40
