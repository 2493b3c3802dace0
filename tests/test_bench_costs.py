"""bench/bench_costs.py at --small size: every row, ratio and start-up phase is measured and printed."""

import os
import sys

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))

import bench_costs  # noqa: E402


def test_bench_costs_small_measures_every_rate(tmp_path, capsys):
  results = bench_costs.main(["--small", "--work_dir=" + str(tmp_path)])
  out = capsys.readouterr().out
  expected = ["matmul", "train teacher", "train student k=30", "train student k=6", "train KD k=30, live teacher",
              "train KD k=30, cached teacher", "write teacher cache (once, whole pass)",
              "inference teacher (steady state)", "inference student k=30 (steady state)",
              "inference student k=6 (steady state)"]
  assert sorted(results) == sorted(expected)
  assert all(value > 0 for value in results.values())
  table = [line for line in out.splitlines() if line.startswith("| ")]
  for what in expected[1:]:
    row = next(line for line in table if line.startswith("| " + what + " |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1].endswith("/s") and float(cells[3]) > 0 and cells[4].endswith("%"), row
  for ratio in ("cached KD k=30 step / student k=30 step", "teacher training / matmul rate",
                "inference k=30 / teacher videos/s", "inference k=6 / teacher videos/s"):
    assert any(line.startswith("| " + ratio + " | ") for line in table), ratio
  for phase in ("validate files", "graph build", "check checkpoint", "session", "restore", "first batch"):
    assert any(line.startswith("| %s | " % phase) for line in table), phase
  # The cache was written from the teacher run and read by the cached KD run.
  assert sorted(os.listdir(str(tmp_path / "teacher_cache"))) == ["manifest.json"] + [
      "train%04d.tfrecord" % i for i in range(4)]
