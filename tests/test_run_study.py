"""The README's main command (scripts/run_study.py) on a tiny generated data set: files, tables, resume."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import run_diagnosis
import run_study
from helpers import run_ok, run_program
from teacher_cache import TeacherCache
from utils import InputError

EXPECTED_SECONDS = 300   # the study, its drivers and a family study in fresh interpreters: started first (conftest.py)

TINY = ["--num_train=96", "--num_validate=40", "--num_classes=12", "--rgb_size=8", "--audio_size=4",
        "--max_frames=24", "--teacher_steps=6", "--student_steps=4", "--eval_every_steps=2", "--batch_size=16",
        "--ks=3", "--model_flags=--groups=2 --nextvlad_cluster_size=4 --nextvlad_hidden_size=16 "
        "--expansion=2 --gating_reduction=4 --drop_rate=0.3"]


def read_csv(path):
  with open(path) as f:
    return list(csv.reader(f))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """The README's command, in a fresh interpreter, at a tiny size."""
  out_dir = str(tmp_path_factory.mktemp("study"))
  run_ok("scripts/run_study.py", "--out_dir=" + out_dir, *TINY)
  return out_dir


@pytest.mark.slow
def test_study_writes_tables_plots_and_kaggle_csv(study):
  results = read_csv(os.path.join(study, "results.csv"))
  assert results[0] == ["model", "GAP k=3", "mAP k=3", "Hit@1 k=3", "PERR k=3"]
  assert [row[0] for row in results[1:]] == [
      "teacher (all frames)", "uniform-k student", "random-k student", "KD student (serial, L_rep+L_pred+L_CE)"]
  for row in results[1:]:
    assert all(0.0 <= float(value) <= 1.0 for value in row[1:])
  gaps = read_csv(os.path.join(study, "results_gap.csv"))
  assert gaps == [["model", "GAP k=3"]] + [[row[0], row[1]] for row in results[1:]]
  # Every run evaluated each checkpoint (every 2 steps) on all 40 validation videos.
  for run, steps in (("teacher_seed0", [2, 4, 6]), ("kd_k3_seed0", [2, 4])):
    evaluated = sorted(f for f in os.listdir(os.path.join(study, "runs", run, "eval")) if f.startswith("metrics-"))
    assert evaluated == ["metrics-%d.json" % s for s in steps]

  costs = read_csv(os.path.join(study, "costs.csv"))
  assert [row[:2] for row in costs[1:]] == [["teacher", "24"], ["uniform k=3", "3"], ["kd k=3", "3"]]
  macs = [int(row[3].replace(",", "")) for row in costs[1:]]
  params = {row[2] for row in costs[1:]}
  assert macs[0] > macs[1] == macs[2] > 0 and len(params) == 1  # same weights, fewer frames, fewer MACs

  for name in ("gap_vs_step.png", "gap_vs_cost.png"):
    with open(os.path.join(study, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # The serial KD student read its teacher's outputs from the study's cache of that teacher.
  recorded = json.load(open(os.path.join(study, "runs", "kd_k3_seed0", "kd_teacher.json")))
  assert recorded["teacher_cache"] == os.path.join(study, "cache", "teacher_seed0")
  manifest = json.load(open(os.path.join(recorded["teacher_cache"], "manifest.json")))
  assert manifest["teacher_checkpoint"] == recorded["teacher_checkpoint"] and \
      sum(s["records"] for s in manifest["shards"].values()) == 96
  kaggle = read_csv(os.path.join(study, "kd_student_k3.csv"))
  assert kaggle[0] == ["VideoId", "LabelConfidencePairs"] and len(kaggle) == 41
  assert len({row[0] for row in kaggle[1:]}) == 40


def test_study_resumes_without_retraining(study, capsys):
  checkpoints = sorted(os.listdir(os.path.join(study, "runs", "kd_k3_seed0")))
  run_study.main(["--out_dir=" + study] + TINY)
  out = capsys.readouterr().out
  assert out.count("skipping") == 4 and "training to step" not in out
  assert sorted(os.listdir(os.path.join(study, "runs", "kd_k3_seed0"))) == checkpoints


def test_study_refuses_data_or_runs_made_with_other_settings(study):
  with pytest.raises(InputError, match="num_classes=20 \\(data has 12\\)"):
    run_study.main(["--out_dir=" + study] + TINY + ["--num_classes=20"])
  with pytest.raises(InputError, match="--student_steps=8 \\(study.json has 4\\)"):
    run_study.main(["--out_dir=" + study] + TINY + ["--student_steps=8"])


@pytest.mark.slow
def test_study_rejects_bad_arguments_in_one_line(tmp_path):
  with pytest.raises(InputError, match="--variants=uniform,first_k"):
    run_study.main(["--out_dir=" + str(tmp_path), "--variants=uniform,first_k,kd"])
  with pytest.raises(InputError, match="--ks=6,300: expected .* between 1 and --max_frames-1 \\(299\\)"):
    run_study.main(["--out_dir=" + str(tmp_path), "--ks=6,300"])
  assert os.listdir(str(tmp_path)) == []
  done = run_program("scripts/run_study.py", "--ks=six", "--out_dir=" + str(tmp_path))
  assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: --ks=six: expected")


@pytest.mark.slow
def test_compare_teachers_tables(tmp_path):
  """scripts/compare_teachers.py: both teachers and their KD students per seed; the paired table is
  the per-seed difference of the two students' final GAP."""
  tiny = [a for a in TINY if not a.startswith(("--ks", "--student_steps", "--teacher_steps"))]
  run_ok("scripts/compare_teachers.py", "--out_dir=" + str(tmp_path), "--seeds=1", "--ks=3",
         "--teacher_steps=4", "--student_steps=2", "--mix_flags=--mix_number=2 --cl_temperature=3", *tiny)
  results = read_csv(os.path.join(str(tmp_path), "results.csv"))
  assert [row[0] for row in results[1:]] == [
      "NeXtVLAD teacher (all frames)", "MixNeXtVLAD teacher (all frames)",
      "KD student of the NeXtVLAD teacher", "KD student of the MixNeXtVLAD teacher"]
  runs = os.path.join(str(tmp_path), "runs")
  assert json.load(open(os.path.join(runs, "mix_teacher_seed0", "model_flags.json")))["mix_number"] == 2
  gap = {name: [json.load(open(os.path.join(runs, "%s_seed0" % name, "eval", "metrics.json")))["gap"]]
         for name in ("kd_from_mix_k3", "kd_from_nextvlad_k3")}
  paired = read_csv(os.path.join(str(tmp_path), "teachers_paired.csv"))
  assert paired[1][0] == "k=3"
  assert [float(d) for d in paired[1][1].split()] == pytest.approx(
      [m - n for m, n in zip(gap["kd_from_mix_k3"], gap["kd_from_nextvlad_k3"])], abs=1e-4)


@pytest.mark.slow
def test_ablation_driver_one_configuration(tmp_path):
  """scripts/run_ablation.py as its docstring shows it, narrowed to one configuration and seed: the
  study of that configuration and the table of its final GAPs."""
  run_ok("scripts/run_ablation.py", "--out_dir", str(tmp_path), "--seeds", "1", "--ks", "3",
         "--only", "bn_decay_099",
         "--study_args", " ".join(a for a in TINY if not a.startswith(("--ks", "--model_flags"))))
  rows = read_csv(os.path.join(str(tmp_path), "ablation.csv"))
  assert rows[0][:4] == ["configuration", "teacher", "student k=3", "KD k=3"]
  assert rows[1][0] == "--batchnorm_decay=0.99" and all(0 <= float(v) <= 1 for v in rows[1][1:4])
  gap = json.load(open(os.path.join(str(tmp_path), "bn_decay_099", "runs", "kd_k3_seed0", "eval",
                                    "metrics-4.json")))["gap"]
  assert float(rows[1][3]) == pytest.approx(gap, abs=1e-4)


def test_diagnosis_driver_tables_kd_against_plain(tmp_path):
  """scripts/run_diagnosis.py as its docstring shows it, at a tiny size: a study per (setting,
  configuration) on the setting's own data, and the table of KD − plain with the paired differences."""
  tiny = [a for a in TINY if not a.startswith(("--ks", "--model_flags", "--teacher_steps", "--student_steps",
                                                "--eval_every_steps"))]
  run_ok("scripts/run_diagnosis.py", "--out_dir", str(tmp_path), "--settings", "short_videos",
         "--configs", "probe=--batchnorm_decay=0.99+--rep_loss=cosine", "--seeds", "2", "--ks", "3",
         "--steps", "4", "--study_args", " ".join(tiny))
  rows = read_csv(os.path.join(str(tmp_path), "diagnosis.csv"))
  assert [r[:2] for r in rows[1:]] == [["short_videos", "probe"]]
  stats = json.load(open(os.path.join(str(tmp_path), "short_videos", "data", "stats.json")))
  assert stats["parameters"]["constants"]["short_fraction"] == 0.6
  made = json.load(open(os.path.join(str(tmp_path), "short_videos", "probe", "study.json")))
  assert made["extra_flags"] == "--batchnorm_decay=0.99 --rep_loss=cosine"
  for row in rows[1:]:
    kd, plain, paired = float(row[4]), float(row[3]), float(row[6])
    assert kd - plain == pytest.approx(float(row[5]), abs=1e-6) == pytest.approx(paired, abs=1e-6)


def test_a_stopped_run_stops_the_study(tmp_path, monkeypatch):
  """train.py returns after Ctrl-C or SIGTERM, with a checkpoint short of --max_steps: the study stops
  there instead of evaluating the partial run as finished and going on."""
  def stopped_early(argv):
    train_dir = next(a.split("=", 1)[1] for a in argv if a.startswith("--train_dir="))
    os.makedirs(train_dir)
    open(os.path.join(train_dir, "checkpoint"), "w").write('model_checkpoint_path: "model.ckpt-258"\n')
    open(os.path.join(train_dir, "model.ckpt-258.index"), "w").close()
  monkeypatch.setattr(run_study.train, "main", stopped_early)
  with pytest.raises(SystemExit, match=r"error: kd_k6_seed1 stopped at step 258 of 2000 \(Ctrl-C or SIGTERM\)"):
    run_study.run_training("kd_k6_seed1", str(tmp_path / "run"), [], 2000)


def test_diagnosis_configurations_by_name_and_as_probes():
  assert run_diagnosis.parse_configs("seed;probe=--batchnorm_decay=0.99+--rep_loss=cosine") == [
      ("seed", "the seed's numerics and KD loss (the defaults)", ""),
      ("probe", "--batchnorm_decay=0.99 --rep_loss=cosine", "--batchnorm_decay=0.99 --rep_loss=cosine")]
  assert run_diagnosis.parse_configs("recommended")[0][2] == run_study.RECOMMENDED_FLAGS
  with pytest.raises(InputError, match=r"--configs=tuned: unknown \[.tuned.\]; expected names from seed,recommended"):
    run_diagnosis.parse_configs("tuned")


def test_the_study_runs_any_family():
  """--model picks the family of every run: its own small flags unless --model_flags are given."""
  assert run_study.parse_args([]).model_flags == run_study.parse_args(["--model=NeXtVLADModel"]).model_flags
  args = run_study.parse_args(["--model=HierarchicalRnnModel"])
  assert args.model_flags == "--model=HierarchicalRnnModel " + run_study.FAMILY_FLAGS["HierarchicalRnnModel"]
  args = run_study.parse_args(["--model=LstmModel", "--model_flags=--lstm_cells=8"])
  assert args.model_flags == "--model=LstmModel --lstm_cells=8"


@pytest.mark.slow
def test_a_family_study_runs_end_to_end(tmp_path):
  """The README's per-family command: an H-RNN teacher, its uniform-k and KD students, in a fresh
  interpreter; every run's model_flags.json names the family."""
  out_dir = str(tmp_path / "hrnn")
  tiny = [a for a in TINY if not a.startswith("--model_flags")]
  run_ok("scripts/run_study.py", "--out_dir=" + out_dir, "--model=HierarchicalRnnModel", "--variants=uniform,kd",
         "--model_flags=--hrnn_cells=8 --hrnn_layers=1 --hrnn_block_frames=6 --hrnn_student_block_frames=3",
         *tiny)
  rows = read_csv(os.path.join(out_dir, "results.csv"))
  assert [row[0] for row in rows[1:]] == [
      "teacher (all frames)", "uniform-k student", "KD student (serial, L_rep+L_pred+L_CE)"]
  assert all(0.0 <= float(value) <= 1.0 for row in rows[1:] for value in row[1:])
  for run in ("teacher_seed0", "uniform_k3_seed0", "kd_k3_seed0"):
    recorded = json.load(open(os.path.join(out_dir, "runs", run, "model_flags.json")))
    assert recorded["model"] == "HierarchicalRnnModel" and recorded["hrnn_cells"] == 8


@pytest.mark.slow
def test_adaptive_curve_reuses_the_study(study):
  """scripts/run_adaptive.py on the study's out_dir (its docstring's command): the teacher and the
  fixed-k students are reused; the any-k students are evaluated at each k and with each exit rule."""
  done = run_ok("scripts/run_adaptive.py", "--out_dir=" + study, "--choices=2,3", "--max_prob_thresholds=0.5",
                "--change_thresholds=0.05", "--gate_thresholds=0.5", "--frameexit_beta=2", *TINY)
  assert "uniform_k3_seed0: trained (4 steps), skipping" in done.stdout
  rows = read_csv(os.path.join(study, "adaptive.csv"))
  assert rows[0] == ["model", "setting", "GAP", "frames read (mean)", "frames read (median)",
                     "multiply-adds / video"]
  settings = [row[:2] for row in rows[1:]]
  assert settings[:3] == [["teacher", "all frames"], ["uniform-k student", "k=3"], ["KD student", "k=3"]]
  for model in ("any-k student", "any-k KD student"):
    assert [s for m, s in settings if m == model] == ["k=2", "k=3", "max_prob 0.5", "prediction_change 0.05",
                                                      "gate 0.5", "gate_frameexit 0.5"]
  gate = json.load(open(os.path.join(study, "runs", "kd_anyk_seed0", "exit_gate.json")))
  assert (gate["target"], gate["beta"], gate["stages"]) == ("frameexit", 2, [2, 3])   # the last one fitted
  for row in rows[1:]:
    assert 0 <= float(row[2]) <= 1 and 0 < float(row[3]) <= 24
  assert [float(row[3]) for row in rows[4:6]] == [2.0, 3.0]
  with open(os.path.join(study, "gap_vs_frames.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_less_data_students_reuse_the_study_and_its_teacher(study):
  """scripts/run_less_data.py on the study's out_dir (its docstring's command): the students at
  fraction 1 are the study's; at 0.5 they train on the first half of each shard, and the KD student's
  cache holds the same teacher (statistics from all training videos) on those videos."""
  records = lambda path: list(tf.io.tf_record_iterator(path))
  done = run_ok("scripts/run_less_data.py", "--out_dir=" + study, "--fractions=0.5", "--seeds=1", *TINY)
  assert "uniform_k3_seed0: trained (4 steps), skipping" in done.stdout
  assert "kd_f50_k3_seed0: training to step 4" in done.stdout
  rows = read_csv(os.path.join(study, "less_data.csv"))
  assert [row[:3] for row in rows] == [["k", "training data", "videos"], ["3", "50%", "48"], ["3", "100%", "96"]]
  for row in rows[1:]:
    assert 0 <= float(row[3].split()[0]) <= 1 and 0 <= float(row[4].split()[0]) <= 1
  data = os.path.join(study, "data", "frame")
  shards = sorted(os.listdir(os.path.join(data, "train")))
  assert sorted(os.listdir(os.path.join(data, "train_f50"))) == shards
  full_cache = TeacherCache(os.path.join(study, "cache", "teacher_seed0"))
  half_cache = TeacherCache(os.path.join(study, "cache", "teacher_seed0_f50"))
  assert half_cache.precise_bn == full_cache.precise_bn   # the same teacher statistics, from all videos
  for shard in shards:
    full = records(os.path.join(data, "train", shard))
    half = records(os.path.join(data, "train_f50", shard))
    assert half == full[:len(full) // 2]
    assert half_cache.manifest["shards"][shard]["records"] == len(half)
    read = lambda cache: [tf.train.Example.FromString(r).features.feature for r in
                          records(cache.path_for(shard))]
    for a, b in zip(read(half_cache), read(full_cache)):
      assert a["id"] == b["id"]
      np.testing.assert_allclose(np.frombuffer(a["predictions"].bytes_list.value[0], "<f4"),
                                 np.frombuffer(b["predictions"].bytes_list.value[0], "<f4"), atol=1e-6)
  with open(os.path.join(study, "less_data.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
