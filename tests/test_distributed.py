"""Distributed training on TensorFlow's own runtime: 1 parameter server + 2 workers on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time

import tensorflow.compat.v1 as tf

import eval as eval_lib
from conftest import ROOT
from test_train import train_args


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_ps_and_two_workers_train_a_checkpoint_eval_reads(frame_data, tmp_path):
  ps_port, w0, w1 = _free_ports(3)
  cluster = {"ps": ["127.0.0.1:%d" % ps_port], "worker": ["127.0.0.1:%d" % w0, "127.0.0.1:%d" % w1]}
  train_dir = tmp_path / "dist"
  args = [sys.executable, os.path.join(ROOT, "train.py")] + train_args(
      frame_data, train_dir, "--model_type=teacher", "--max_steps=400", "--log_every_steps=50")[1:]
  def start(task_type, index):
    env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                 "task": {"type": task_type, "index": index}}),
               CUDA_VISIBLE_DEVICES="")
    log = open(str(tmp_path / ("%s%d.log" % (task_type, index))), "w")
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  ps = start("ps", 0)
  try:
    workers = [start("worker", 0), start("worker", 1)]
    deadline = time.time() + 240
    for worker in workers:
      worker.wait(timeout=max(1, deadline - time.time()))
    logs = [open(str(tmp_path / ("worker%d.log" % i))).read() for i in range(2)]
    assert [w.returncode for w in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  finally:
    ps.kill()
    ps.wait()
  checkpoint = tf.train.latest_checkpoint(str(train_dir))
  assert checkpoint is not None and int(checkpoint.rsplit("-", 1)[1]) >= 400
  steps_by_worker = [int(log.split("Training stopped at global step")[1].split("; ")[1].split(" steps")[0])
                     for log in logs]
  # Asynchronous updates: a worker may run a step or two past --max_steps before it sees the global step.
  assert min(steps_by_worker) > 0 and 400 <= sum(steps_by_worker) <= 410, steps_by_worker
  result = eval_lib.Evaluator(str(train_dir), frame_data["validate"], 64).evaluate(checkpoint)
  assert result["num_videos"] == 150 and result["gap"] > 0
