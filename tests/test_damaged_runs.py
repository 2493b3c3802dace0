"""Damaged run directories (docs/RELIABILITY.md, "Damaged run directories"): a truncated checkpoint,
broken JSON beside a run, a full disk. One run is trained once for the module: 40 steps, checkpoints
at 20 and 40; its copy has model.ckpt-40's data file cut to half its size. Each program is checked on
it: training resumes from the newest intact checkpoint, the readers of a finished run fall back with
a warning or refuse a damaged checkpoint named explicitly, a KD teacher or a cache's teacher is
refused, and every refusal is one line."""

import os
import shlex
import shutil
import subprocess
import sys

import pytest
import tensorflow.compat.v1 as tf

import cache_teacher
import checkpoints
import config
import eval as eval_lib
import export_model
import inference
import kd_teacher
import run_ablation
import run_study
import teacher_cache
import train
from helpers import ROOT, model_flags, run_program, train_args
from utils import InputError

DATA = "model.ckpt-40.data-00000-of-00001"


@pytest.fixture(scope="module")
def runs(frame_data, tmp_path_factory):
  """{"intact": a teacher trained 40 steps (model.ckpt-20, model.ckpt-40), "damaged": its copy with
  model.ckpt-40's data file truncated to half}. Tests that write into a run work on their own copy."""
  root = tmp_path_factory.mktemp("damaged_runs")
  intact, damaged = root / "intact", root / "damaged"
  train.main(train_args(frame_data, intact, "--model_type=teacher", "--max_steps=40",
                        "--export_model_steps=20"))
  shutil.copytree(str(intact), str(damaged))
  data = damaged / DATA
  os.truncate(str(data), data.stat().st_size // 2)
  return {"intact": intact, "damaged": damaged}


def _copy(run, target):
  shutil.copytree(str(run), str(target))
  return target


def _files(folder):
  """{relative path: size} of every file under folder."""
  return {os.path.relpath(os.path.join(top, name), str(folder)): os.path.getsize(os.path.join(top, name))
          for top, _, names in os.walk(str(folder)) for name in names}


def _one_error_line(result):
  """The `error:` line of a program that refused its input: exit status 2, one line, no traceback."""
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  return errors[0]


# -- training -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_passes_over_the_damaged_checkpoint_and_keeps_its_files(runs, frame_data, tmp_path, tf_log):
  run = _copy(runs["damaged"], tmp_path / "run")
  truncated = (run / DATA).read_bytes()
  assert train.main(train_args(frame_data, run, "--model_type=teacher", "--max_steps=60",
                               "--export_model_steps=20")) == 60
  warnings = [line for line in tf_log if DATA in line]
  assert len(warnings) == 1, warnings
  assert "model.ckpt-40 is damaged (" in warnings[0] and "cannot be read at tensor" in warnings[0]
  assert "restoring %s, the newest intact checkpoint" % (run / "model.ckpt-20") in warnings[0]
  assert any("Resumed from %s at step 20" % (run / "model.ckpt-20") in line for line in tf_log)
  aside = run / checkpoints.DAMAGED_DIR
  assert sorted(os.listdir(str(aside))) == sorted(
      ["model.ckpt-40.index", "model.ckpt-40.meta", DATA]), "moved aside, whole"
  assert (aside / DATA).read_bytes() == truncated, "never overwritten"
  assert checkpoints.listed(str(run)) == [str(run / ("model.ckpt-%d" % s)) for s in (20, 40, 60)]
  for step in (20, 40, 60):
    assert checkpoints.damage(str(run / ("model.ckpt-%d" % step))) is None, step


@pytest.mark.slow
def test_resume_without_an_intact_checkpoint_is_one_line(runs, frame_data, tmp_path):
  run = _copy(runs["damaged"], tmp_path / "run")
  os.truncate(str(run / "model.ckpt-20.data-00000-of-00001"), 100)
  before = _files(run)
  result = run_program("train.py", *train_args(frame_data, run, "--model_type=teacher",
                                               "--max_steps=60")[1:])
  line = _one_error_line(result)
  assert "--train_dir=%s holds no intact checkpoint (its files are left as they are)" % run in line, line
  assert str(run / DATA) in line and str(run / "model.ckpt-20.data-00000-of-00001") in line, line
  assert _files(run) == before, "nothing moved, written or deleted"


def test_a_checkpoint_index_that_cannot_be_parsed_is_refused(tmp_path):
  (tmp_path / "checkpoint").write_text("model_checkpoint_path: \"model.ckpt-40")
  with pytest.raises(InputError, match="checkpoint cannot be parsed: expected the checkpoint index"):
    checkpoints.choose(str(tmp_path), "--train_dir")


# -- readers of a finished run ----------------------------------------------------------------------------
@pytest.mark.slow
def test_eval_run_once_falls_back_and_refuses_a_damaged_checkpoint_file(runs, frame_data, tmp_path, tf_log):
  run = _copy(runs["damaged"], tmp_path / "run")
  argv = ["eval.py", "--train_dir=" + str(run), "--eval_data_pattern=" + frame_data["validate"],
          "--batch_size=64"]
  [metrics] = eval_lib.main(argv + ["--run_once"])
  assert metrics["global_step"] == 20 and metrics["checkpoint"] == str(run / "model.ckpt-20")
  assert len([line for line in tf_log if DATA in line and "restoring" in line]) == 1
  result = run_program("eval.py", *argv[1:] + ["--checkpoint_file=" + str(run / "model.ckpt-40")])
  line = _one_error_line(result)
  assert ("--checkpoint_file=%s cannot be read as a checkpoint: %s cannot be read at tensor"
          % (run / "model.ckpt-40", run / DATA)) in line, line


@pytest.mark.slow
def test_eval_watch_skips_a_damaged_checkpoint_once(runs, frame_data, tmp_path, tf_log):
  run = _copy(runs["damaged"], tmp_path / "run")
  results = eval_lib.main(["eval.py", "--train_dir=" + str(run), "--eval_data_pattern=" + frame_data["validate"],
                           "--batch_size=64", "--eval_interval_secs=1", "--max_wait_secs=3"])
  assert [r["global_step"] for r in results] == [20]
  skipped = [line for line in tf_log if "is damaged" in line]
  assert len(skipped) == 1 and DATA in skipped[0] and "skipped, and not retried" in skipped[0], skipped
  # A checkpoint written later under the skipped one's name (a resumed run) is another one.
  damaged = str(run / "model.ckpt-40")
  identity = eval_lib._identity(damaged)
  assert eval_lib.pending(str(run), {identity}) == []
  os.utime(damaged + ".index", ns=(identity[1] + 10 ** 9, identity[1] + 10 ** 9))
  assert eval_lib.pending(str(run), {identity}) == [damaged]


@pytest.mark.slow
def test_inference_and_export_fall_back_and_refuse_a_damaged_checkpoint_file(runs, frame_data, tmp_path,
                                                                             tf_log):
  run, damaged = runs["damaged"], str(runs["damaged"] / "model.ckpt-40")
  argv = ["inference.py", "--train_dir=" + str(run), "--batch_size=64",
          "--input_data_pattern=" + frame_data["validate"], "--output_file=" + str(tmp_path / "out.csv")]
  assert inference.main(argv) == 150
  assert any("Predicting with %s" % (run / "model.ckpt-20") in line for line in tf_log)
  export_dir = export_model.main(["export_model.py", "--train_dir=" + str(run),
                                  "--export_dir=" + str(tmp_path / "exported")])
  exported = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
  assert exported.get_tensor("global_step") == 20
  assert len([line for line in tf_log if DATA in line and "restoring" in line]) == 2
  with pytest.raises(InputError, match="--checkpoint_file=%s cannot be read as a checkpoint" % damaged):
    inference.main(argv[:-1] + ["--output_file=" + str(tmp_path / "never.csv"), "--checkpoint_file=" + damaged])
  with pytest.raises(InputError, match="--checkpoint_file=%s cannot be read as a checkpoint" % damaged):
    export_model.export(str(run), checkpoint_file=damaged, export_dir=str(tmp_path / "never"))
  assert sorted(os.listdir(str(tmp_path))) == ["exported", "out.csv"]


# -- a teacher is exactly the one named ---------------------------------------------------------------------
@pytest.mark.slow
def test_kd_teacher_and_cache_refuse_a_damaged_checkpoint(runs, frame_data, tmp_path):
  run, damaged = runs["damaged"], str(runs["damaged"] / "model.ckpt-40")
  kd = lambda train_dir, *extra: train.main(train_args(frame_data, train_dir, "--model_type=kd",
                                                       "--k_frame=4", *extra))
  with pytest.raises(InputError, match="--teacher_checkpoint=%s: its latest checkpoint %s cannot be read as a "
                                       "checkpoint: %s cannot be read at tensor .*it is not replaced by an "
                                       "older one" % (run, damaged, run / DATA)):
    kd(tmp_path / "kd", "--teacher_checkpoint=" + str(run), "--max_steps=2")
  with pytest.raises(InputError, match="--teacher_checkpoint=%s cannot be read as a checkpoint" % damaged):
    kd(tmp_path / "kd", "--teacher_checkpoint=" + damaged, "--max_steps=2")
  with pytest.raises(InputError, match="--teacher_checkpoint=%s: its latest checkpoint" % run):
    cache_teacher.main(["cache_teacher.py", "--teacher_checkpoint=" + str(run), "--cache_dir=" + str(tmp_path / "cache"),
                        "--input_data_pattern=" + frame_data["train"]])
  assert os.listdir(str(tmp_path)) == [], "refused before anything was written"
  # The intact checkpoint of that run, named explicitly, is a teacher; a broken record of it is one line.
  intact = str(run / "model.ckpt-20")
  assert kd(tmp_path / "kd", "--teacher_checkpoint=" + intact, "--max_steps=2") == 2
  (tmp_path / "kd" / kd_teacher.RECORD_FILE).write_text('{"teacher_checkpoint": "')
  with pytest.raises(InputError, match=r"kd_teacher.json is not valid JSON \(.*\): expected the teacher record"):
    kd(tmp_path / "kd", "--teacher_checkpoint=" + intact, "--max_steps=4")


# -- broken JSON beside a run --------------------------------------------------------------------------------
def test_a_truncated_model_flags_json_is_one_line(tmp_path):
  config.write_model_flags(str(tmp_path), model_flags(num_classes=8))
  path = tmp_path / config.MODEL_FLAGS_FILE
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(InputError, match=r"model_flags.json is not valid JSON \(.*\): expected the model flags "
                                       r"train.py writes") as raised:
    eval_lib.main(["eval.py", "--train_dir=" + str(tmp_path), "--eval_data_pattern=unused", "--run_once"])
  assert "\n" not in str(raised.value)


def test_a_broken_cache_manifest_is_one_line(tmp_path):
  manifest = tmp_path / teacher_cache.MANIFEST_FILE
  manifest.write_text('{"format": 1, "dtype": "float32", "teacher_check')
  with pytest.raises(InputError, match=r"manifest.json is not valid JSON \(.*\): expected the manifest "
                                       r"cache_teacher.py writes"):
    teacher_cache.TeacherCache(str(tmp_path))
  manifest.write_text('{"format": 1, "dtype": "float32", "sizes": {}}')
  with pytest.raises(InputError, match="manifest.json lacks teacher_checkpoint, global_step, "
                                       "teacher_model_flags, shards: expected the manifest"):
    teacher_cache.TeacherCache(str(tmp_path))


def test_broken_metrics_json_read_by_the_study_is_one_line(tmp_path):
  (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-20"\n')
  (tmp_path / "eval").mkdir()
  (tmp_path / "eval" / "metrics-20.json").write_text('{"gap": 0.9')
  expected = r"metrics-20.json is not valid JSON \(.*\): expected the metrics eval.py writes"
  with pytest.raises(InputError, match=expected):
    run_study.evaluate_all("run", str(tmp_path), {})
  with pytest.raises(InputError, match=expected):
    run_ablation.final_gap(str(tmp_path))


# -- a full disk -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_checkpoint_write_that_fails_leaves_the_run_resumable(runs, frame_data, tmp_path, monkeypatch, tf_log):
  """In process: the Saver leaves a partial data file of step 60 and fails as on a full disk."""
  run = _copy(runs["intact"], tmp_path / "run")

  def full_disk(saver, sess, save_path, global_step=None, **kwargs):
    partial = "%s-%d.data-00000-of-00001" % (save_path, global_step)
    with open(partial, "wb") as f:
      f.write(b"\0" * 1000)
    raise tf.errors.ResourceExhaustedError(None, None, partial + ".tempstate1; No space left on device")
  monkeypatch.setattr(tf.train.Saver, "save", full_disk)
  args = train_args(frame_data, run, "--model_type=teacher", "--max_steps=60", "--export_model_steps=20")
  with pytest.raises(train.WriteFailed) as raised:
    train.main(args)
  assert str(raised.value) == (
      "checkpoint write failed at global step 60 (%s-60.data-00000-of-00001.tempstate1; No space left on "
      "device); the newest intact checkpoint is %s: free space (or fix the cause) and rerun to resume "
      "from it" % (run / "model.ckpt", run / "model.ckpt-40"))
  assert checkpoints.listed(str(run))[-1] == str(run / "model.ckpt-40")
  monkeypatch.undo()
  del tf_log[:]
  assert train.main(args) == 60
  assert any("Resumed from %s at step 40" % (run / "model.ckpt-40") in line for line in tf_log)
  assert checkpoints.damage(str(run / "model.ckpt-60")) is None


def _in_a_new_mount_namespace(script, mount_point):
  """Runs the shell `script` in a new user and mount namespace (where it can mount a tmpfs on
  `mount_point`, seen by it alone); skips the test where this machine does not allow that without
  privileges."""
  mount_point.mkdir()
  probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m none %s"
                          % shlex.quote(str(mount_point))], capture_output=True, text=True)
  if probe.returncode != 0:
    pytest.skip("no unprivileged tmpfs here (unshare -rm; mount -t tmpfs): %s" % probe.stderr.strip()[-200:])
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(["unshare", "-rm", "sh", "-ec", script], capture_output=True, text=True,
                        env=env, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_a_full_disk_leaves_the_previous_checkpoint_usable_and_the_run_resumable(runs, frame_data, tmp_path):
  """On a real full file system: a tmpfs with room for the new events file but not for a checkpoint
  more. The rerun after the disk is enlarged (remount) resumes."""
  mount, out = tmp_path / "mount", tmp_path / "out"
  out.mkdir()
  used_kb = sum(-(-size // 4096) * 4 for size in _files(runs["intact"]).values())
  train_command = " ".join(shlex.quote(a) for a in [sys.executable, os.path.join(ROOT, "train.py")] + train_args(
      frame_data, mount / "run", "--model_type=teacher", "--max_steps=60", "--export_model_steps=20")[1:])
  q = lambda path: shlex.quote(str(path))
  script = "\n".join([
      "mount -t tmpfs -o size=%dk none %s" % (used_kb + 400, q(mount)),
      "cp -r %s %s" % (q(runs["intact"]), q(mount / "run")),
      "%s 2> %s && exit 1 || echo $? > %s" % (train_command, q(out / "full.err"), q(out / "full.rc")),
      "cp -r %s %s" % (q(mount / "run"), q(out / "after_full")),
      "mount -o remount,size=64m %s" % q(mount),
      "%s 2> %s" % (train_command, q(out / "resumed.err")),
      "cp -r %s %s" % (q(mount / "run"), q(out / "resumed"))])
  result = _in_a_new_mount_namespace(script, mount)
  assert result.returncode == 0, result.stderr[-3000:]
  failed = subprocess.CompletedProcess([], int((out / "full.rc").read_text()), "", (out / "full.err").read_text())
  line = _one_error_line(failed)
  assert "error: checkpoint write failed at global step 60 (" in line and "No space left on device" in line, line
  assert line.endswith("the newest intact checkpoint is %s/run/model.ckpt-40: free space (or fix the cause) "
                       "and rerun to resume from it" % mount), line
  after = out / "after_full"
  assert checkpoints.listed(str(after))[-1] == str(after / "model.ckpt-40")
  assert checkpoints.damage(str(after / "model.ckpt-40")) is None
  resumed = (out / "resumed.err").read_text()
  assert "Resumed from %s/run/model.ckpt-40 at step 40" % mount in resumed, resumed[-3000:]
  assert checkpoints.damage(str(out / "resumed" / "model.ckpt-60")) is None
