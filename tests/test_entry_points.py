"""Every program a user runs, in a fresh interpreter with the command line its docstring or the README
shows (an in-process call can hide a missing import or a flag defined only by another program): the
generator, the three training stages, eval, export, inference, the teacher cache, the cost scripts
and the benchmarks. The heavier drivers (run_study, run_ablation, compare_teachers, real_data_recipe,
import_checkpoint, bench_costs) are run this way by their own test files."""

import csv
import importlib
import json

import pytest

import precision
import utils
from helpers import run_ok, run_program

EXPECTED_SECONDS = 180   # every program in a fresh interpreter: started first (conftest.py)

pytestmark = pytest.mark.slow

SMALL = ["--feature_names=rgb,audio", "--feature_sizes=16,4", "--num_classes=10", "--max_frames=30",
         "--groups=2", "--nextvlad_cluster_size=4", "--nextvlad_hidden_size=16", "--expansion=2",
         "--gating_reduction=4", "--batch_size=16", "--num_readers=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """scripts/generate_synthetic_yt8m.py as its docstring shows it, at a tiny size."""
  out = tmp_path_factory.mktemp("generated")
  result = run_ok("scripts/generate_synthetic_yt8m.py", "--out_dir=%s" % out, "--num_train=96",
                  "--num_validate=32", "--num_test=16", "--num_classes=10", "--rgb_size=16",
                  "--audio_size=4", "--max_frames=30", "--min_frames=8", "--shards_per_split=2")
  stats = json.loads(result.stdout[result.stdout.index("{"):])
  assert stats["frames"]["max"] <= 30
  return {"root": out, "train": str(out / "frame" / "train" / "train*.tfrecord"),
          "validate": str(out / "frame" / "validate" / "validate*.tfrecord"),
          "test": str(out / "frame" / "test" / "test*.tfrecord")}


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory):
  """Stage 1 of the README: train.py --model_type=teacher."""
  train_dir = tmp_path_factory.mktemp("runs") / "teacher"
  run_ok("train.py", "--model_type=teacher", "--train_data_pattern=" + data["train"],
         "--train_dir=%s" % train_dir, "--max_steps=6", "--start_new_model", *SMALL)
  return str(train_dir)


def test_training_stages_eval_export_inference(data, teacher, tmp_path):
  student = tmp_path / "student_k6"   # in bfloat16 where the CPU has it, else float32 after one warning
  result = run_ok("train.py", "--model_type=student", "--k_frame=6", "--train_data_pattern=" + data["train"],
                  "--train_dir=%s" % student, "--max_steps=4", "--mixed_precision=bfloat16", *SMALL)
  recorded = json.load(open(str(student / "model_flags.json")))["mixed_precision"]
  assert recorded == precision.resolve("bfloat16")
  assert ("--mixed_precision=bfloat16: " in result.stderr) == (recorded == "none"), result.stderr[-2000:]
  kd = tmp_path / "kd_k6"   # the README's KD stage with the recommended settings
  run_ok("train.py", "--flagfile=configs/recommended.flags", "--model_type=kd", "--k_frame=6",
         "--frame_sampling=uniform", "--teacher_checkpoint=" + teacher, "--train_data_pattern=" + data["train"],
         "--train_dir=%s" % kd, "--max_steps=4", *SMALL)
  recorded = json.load(open(str(kd / "kd_teacher.json")))
  assert recorded["teacher_checkpoint"].endswith("model.ckpt-6") and recorded["precise_bn"]["batches"] == 200
  assert json.load(open(str(kd / "model_flags.json")))["batchnorm_decay"] == 0.99
  run_ok("eval.py", "--train_dir=%s" % kd, "--eval_data_pattern=" + data["validate"], "--run_once")
  metrics = json.load(open(str(kd / "eval" / "metrics.json")))
  assert metrics["global_step"] == 4 and metrics["num_videos"] == 32 and 0 <= metrics["gap"] <= 1
  run_ok("export_model.py", "--train_dir=%s" % kd)
  export_dir = kd / "export" / "step_4"
  assert (export_dir / "saved_model.pb").exists()
  tgz = tmp_path / "model.tgz"
  predicted = {}
  for source in ("--train_dir=%s" % kd, "--saved_model_dir=%s" % export_dir, "--input_model_tgz=%s" % tgz):
    output = tmp_path / "sub.csv"
    pack = ["--output_model_tgz=%s" % tgz] if source.startswith("--train_dir") else []
    run_ok("inference.py", source, "--input_data_pattern=" + data["test"], "--output_file=%s" % output,
           "--untar_model_dir=%s" % (tmp_path / "untar"), *pack)
    rows = list(csv.reader(open(str(output))))
    assert rows[0] == ["VideoId", "LabelConfidencePairs"] and len(rows) == 17
    assert len(rows[1][1].split()) == 2 * 10   # top_k 20 of 10 classes: every class, with its score
    predicted[source.split("=")[0]] = rows
  # The starter's model .tgz reads back to the predictions of the run it packs.
  assert predicted["--input_model_tgz"] == predicted["--train_dir"]


def test_teacher_cache_then_kd_from_it(data, teacher, tmp_path):
  cache = tmp_path / "cache"
  run_ok("cache_teacher.py", "--teacher_checkpoint=" + teacher, "--input_data_pattern=" + data["train"],
         "--cache_dir=%s" % cache, "--cache_dtype=float16")
  manifest = json.load(open(str(cache / "manifest.json")))
  assert manifest["dtype"] == "float16" and sum(s["records"] for s in manifest["shards"].values()) == 96
  kd = tmp_path / "kd_cached"
  result = run_ok("train.py", "--model_type=kd", "--k_frame=6", "--teacher_cache=%s" % cache,
                  "--train_data_pattern=" + data["train"], "--train_dir=%s" % kd, "--max_steps=3", *SMALL)
  assert "no teacher graph" in result.stderr


def test_cost_and_spectrum_scripts(data, teacher):
  costs = json.loads(run_ok("scripts/model_costs.py", "--train_dir=" + teacher, "--frames=30").stdout)
  assert costs["parameters"] > 0 and costs["macs"] > 0 and costs["ms_per_video"] > 0
  out = run_ok("scripts/pca_spectrum.py", "--data_pattern=" + data["train"].replace("train*", "*"),
               "--rgb_size=16").stdout
  assert "log-log correlation" in out and out.count("\n| ") >= 3


def test_metric_and_reader_benchmarks():
  out = run_ok("bench/bench_metrics.py", "--num_videos", "2000", "--num_classes", "50", "--batch_size",
               "500", "--python_videos", "200").stdout
  assert "EvaluationMetrics, 2000 videos x 50 classes" in out and "videos/s" in out, out[-2000:]
  out = run_ok("bench/bench_readers.py", "--videos", "24", "--frames", "30", "--batch", "8").stdout
  assert "all frames (teacher):" in out and "videos/s" in out, out[-2000:]


@pytest.mark.slow
def test_bad_command_lines_are_one_line(data, tmp_path):
  """A script's bad input: `error: ...`, exit status 2, no traceback, in a fresh interpreter (train.py's:
  test_train.py)."""
  for program, args in (("scripts/pca_spectrum.py", ["--data_pattern=%s" % (tmp_path / "none*")]),):
    result = run_program(program, *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith("error: "), (program, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, (program, result.stderr[-2000:])


@pytest.mark.parametrize("program, args", [("eval", ["--top_k=0"]), ("inference", ["--batch_size=-1"]),
                                           ("export_model", ["--top_k=0"]),
                                           ("cache_teacher", ["--cache_dtype=float64"]),
                                           ("import_checkpoint", ["--drop_rate=2"])])
def test_every_programs_bad_flag_is_one_line(program, args, capsys):
  """The other programs' bad flags, through the harness their `__main__` calls (utils.run_cli), in
  process: each is also run whole in a fresh interpreter by a test of its own."""
  module = importlib.import_module(program)
  with pytest.raises(SystemExit) as stopped:
    utils.run_cli(module.main, [program + ".py"] + args)
  lines = capsys.readouterr().err.strip().splitlines()
  flag = args[0].split("=")[0]
  assert stopped.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], lines
