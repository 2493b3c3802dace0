"""bench/bench_costs.py at --small size: every row, ratio, start-up phase and family is measured and
printed."""

import os

import pytest

from helpers import run_ok

EXPECTED_SECONDS = 80   # the benchmark at --small, in one test: started early (conftest.py)


@pytest.mark.slow
def test_bench_costs_small_measures_every_rate(tmp_path):
  """As its docstring shows it (--small), in a fresh interpreter."""
  out = run_ok("bench/bench_costs.py", "--small", "--work_dir=" + str(tmp_path)).stdout
  expected = ["matmul", "train teacher", "train student k=30", "train student k=6", "train KD k=30, live teacher",
              "train KD k=30, cached teacher", "write teacher cache (once, whole pass)",
              "inference teacher (steady state)", "inference student k=30 (steady state)",
              "inference student k=6 (steady state)"]
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
  # Every family as a teacher (all 40 frames) and at k = 6 and 30: parameters, multiply-adds, ms/video.
  for family in ("NeXtVLADModel", "HierarchicalRnnModel", "NetVLADModelLF", "LstmModel", "DbofModel"):
    rows = [line for line in table if line.startswith("| %s | " % family)]
    assert [row.split("|")[2].strip() for row in rows] == ["40", "6", "30"], family
    assert all(float(row.split("|")[5]) > 0 for row in rows), rows
  # The cache was written from the teacher run and read by the cached KD run.
  assert sorted(os.listdir(str(tmp_path / "teacher_cache"))) == ["manifest.json"] + [
      "train%04d.tfrecord" % i for i in range(4)]
