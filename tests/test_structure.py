"""The structure rules: every flag two programs share is defined once, in config.py (a second definition
is an error at import); the model registry has no import cycle; every program's entry point is the
one harness."""

import ast
import json
import os
import re
import subprocess
import sys

import pytest

import config
import model_utils
from helpers import ROOT
from utils import InputError

PROGRAMS = ("train", "eval", "inference", "export_model", "cache_teacher", "import_checkpoint", "precise_bn",
            "early_exit")
MODEL_FILES = ("nextvlad.py", "netvlad.py", "hrnn.py", "frame_level_models.py", "video_level_models.py")


def _imports(path):
  """The top-level module names a file imports."""
  tree = ast.parse(open(os.path.join(ROOT, path)).read())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module.split(".")[0])
  return names


@pytest.mark.slow
def test_flags_have_one_home():
  """In a fresh interpreter that imports every flag-driven program: each flag is defined by exactly
  one module, the model flags by config.py, and no program redefines a config flag."""
  script = ("import json, sys; sys.path[:0] = [%r, %r]\n"
            "import %s\n"
            "from absl import flags\n"
            "print(json.dumps({m: sorted(f.name for f in flags.FLAGS.get_flags_for_module(m)) "
            "for m in %r}))" % (ROOT, os.path.join(ROOT, "scripts"), ", ".join(PROGRAMS + ("config",)),
                                 PROGRAMS + ("config",)))
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
  assert done.returncode == 0, done.stderr[-3000:]
  defined = json.loads(done.stdout.strip().splitlines()[-1])
  assert set(config.MODEL_FLAG_NAMES) <= set(defined["config"])
  owners = {}
  for module, names in defined.items():
    for name in names:
      assert name not in owners, "--%s defined by %s and %s" % (name, owners[name], module)
      owners[name] = module
  for shared in ("train_dir", "checkpoint_file", "teacher_checkpoint", "input_data_pattern", "top_k",
                 "batch_size", "gradient_clipping", "kd_regularization", "kd_teacher_is_training",
                 "output_dir", "precise_bn_batches", "teacher_cache", "k_frame_choices", "exit_rule",
                 "exit_threshold", "exit_stages"):
    assert owners[shared] == "config", shared


@pytest.mark.slow
def test_a_conflicting_redefinition_is_an_error_at_import():
  script = ("import sys; sys.path.insert(0, %r)\nimport config\nfrom absl import flags\n"
            "flags.DEFINE_integer('batch_size', 5, 'another default')" % ROOT)
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
  assert done.returncode != 0 and "DuplicateFlagError" in done.stderr and "batch_size" in done.stderr


def test_the_registry_has_no_cycle():
  """models.py imports no project module; each model file imports `models` (or builds on
  frame_level_models.FrameModel) and never model_utils; the one table from --model names to classes is
  model_utils.MODELS."""
  project = {name[:-3] for name in os.listdir(ROOT) if name.endswith(".py")}
  assert not _imports("models.py") & project
  for path in MODEL_FILES:
    imported = _imports(path)
    assert imported & {"models", "frame_level_models"}, path
    assert "model_utils" not in imported and "config" not in imported, path
  assert sorted(model_utils.MODELS) == ["DbofModel", "FrameLevelLogisticModel", "HierarchicalRnnModel",
                                        "LogisticModel", "LstmModel", "MixNeXtVladModel", "MoeModel",
                                        "NeXtVLADModel", "NetVLADModelLF"]
  with pytest.raises(InputError, match=r"--model='Nope': unknown, expected one of DbofModel"):
    model_utils.get_model("Nope")


def test_every_program_uses_the_one_harness():
  """Each flag-driven program's main is utils.flag_program(run) and its __main__ block utils.run_cli;
  the argparse scripts and benchmarks run through utils.run_cli as well."""
  for path in ("train.py", "eval.py", "inference.py", "export_model.py", "cache_teacher.py",
               "precise_bn.py", "scripts/import_checkpoint.py", "early_exit.py"):
    text = open(os.path.join(ROOT, path)).read()
    assert "main = utils.flag_program(" in text and "FLAGS(argv)" not in text, path
  scripts = [os.path.join(folder, name) for folder in ("scripts", "bench")
             for name in os.listdir(os.path.join(ROOT, folder)) if name.endswith(".py")]
  assert len(scripts) >= 10
  for path in scripts + ["train.py", "eval.py", "inference.py", "export_model.py", "cache_teacher.py",
                         "precise_bn.py", "early_exit.py"]:
    tail = open(os.path.join(ROOT, path)).read().split('if __name__ == "__main__":')[-1]
    assert tail.strip().startswith("utils.run_cli(main, sys.argv"), path


def test_every_recommended_flag_has_its_fidelity_row():
  """configs/recommended.flags: numerics and distillation flags of train.py only, each named in a row of
  docs/FIDELITY.md's table (where its measured effect is)."""
  import train   # noqa: F401  (defines train.py's flags)
  from absl import flags
  lines = [l.strip() for l in open(os.path.join(ROOT, "configs", "recommended.flags")) if l.strip()]
  names = [l.split("=")[0][2:] for l in lines if not l.startswith("#")]
  assert names and all(name in flags.FLAGS for name in names), names
  rows = [l for l in open(os.path.join(ROOT, "docs", "FIDELITY.md")) if l.startswith("| ")]
  for name in names:
    assert any(re.search(r"--%s\b" % name, row) for row in rows), "--%s has no row in docs/FIDELITY.md" % name
  architecture_or_data = {"model", "model_type", "feature_names", "feature_sizes", "frame_features", "num_classes",
                          "max_frames", "k_frame", "frame_sampling", "groups", "nextvlad_cluster_size",
                          "nextvlad_hidden_size", "expansion", "gating_reduction", "drop_rate", "batch_size",
                          "train_data_pattern", "max_steps"}
  assert not architecture_or_data & set(names), names
