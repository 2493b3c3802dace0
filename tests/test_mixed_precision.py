"""--mixed_precision: the flag, the session config every program builds, the fall-back where the hardware
is missing, dynamic loss scaling (values), the float16 training graph (loss scaling) and its NaN guard,
the records (model_flags.json, eval's metrics), the bfloat16 cache read back; bfloat16 training where
the CPU has it and float16 training where a GPU is visible.

Without a GPU, the float16 training graph runs with its loss scaling but float32 arithmetic: grappler's
float16 rewrite converts GPU ops only, and its CPU emulation (auto_mixed_precision_cpu) crashes the
process (segmentation fault) on this project's training graph in TensorFlow 2.21, with or without the
loss scaling, so it cannot stand in for a GPU here."""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

import eval as eval_lib
import precision
import teacher_cache
import train
from helpers import train_args
from utils import InputError

ON, DEFAULT = rewriter_config_pb2.RewriterConfig.ON, rewriter_config_pb2.RewriterConfig.DEFAULT
GPU = pytest.mark.skipif(not precision.gpu_visible(), reason="no GPU visible: float16 runs float32 here")
NATIVE = pytest.mark.skipif(not (precision.native_bfloat16() and precision.onednn_enabled()),
                            reason="this CPU has no native bfloat16 (no %s in /proc/cpuinfo) or TensorFlow's "
                                   "oneDNN is off: --mixed_precision=bfloat16 runs float32 here"
                                   % " / ".join(precision.BFLOAT16_CPU_FLAGS))


def test_the_flag_is_checked_before_anything_runs(frame_data, tmp_path):
  with pytest.raises(InputError, match="--mixed_precision=float64: value should be one of <none|bfloat16|float16>"):
    train.main(train_args(frame_data, tmp_path / "run", "--mixed_precision=float64"))
  assert not os.path.exists(str(tmp_path / "run"))


def test_session_config_switches_on_one_rewrite():
  for mode, field in (("none", None), ("bfloat16", "auto_mixed_precision_onednn_bfloat16"),
                      ("float16", "auto_mixed_precision")):
    session = precision.session_config(mode, allow_soft_placement=True)
    assert session.allow_soft_placement
    options = session.graph_options.rewrite_options
    for name in ("auto_mixed_precision", "auto_mixed_precision_onednn_bfloat16", "auto_mixed_precision_cpu",
                 "auto_mixed_precision_mkl"):
      assert getattr(options, name) == (ON if name == field else DEFAULT), (mode, name)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor : 0\nflags : fpu avx2 amx_bf16 avx512_bf16\n\nprocessor : 1\nflags : fpu\n")
  assert precision.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "amx_bf16", "avx512_bf16"}
  assert precision.cpu_flags(str(tmp_path / "missing")) == set()


@pytest.mark.parametrize("native,onednn,forced,gpu,mode,expected,warning", [
    (False, False, None, False, "bfloat16", "none", "no AVX512-BF16 or AMX-BF16"),
    (True, False, None, False, "bfloat16", "none", "oneDNN optimisations are off"),
    (True, True, None, False, "BFloat16", "bfloat16", None),
    (False, True, "1", False, "bfloat16", "bfloat16", "it emulates bfloat16"),
    (False, False, None, False, "float16", "none", "no GPU is visible"),
    (False, False, None, True, "float16", "float16", None),
    (False, False, None, False, "none", "none", None)])
def test_resolve_falls_back_with_one_warning_where_the_hardware_is_missing(
    monkeypatch, tf_log, native, onednn, forced, gpu, mode, expected, warning):
  monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"} | ({"amx_bf16"} if native else set()))
  monkeypatch.setattr(precision, "onednn_enabled", lambda: onednn)
  monkeypatch.setattr(precision, "gpu_visible", lambda: gpu)
  if forced:
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", forced)
  else:
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
  assert precision.resolve(mode) == expected
  lines = [line for line in tf_log if "--mixed_precision" in line]
  assert len(lines) == (1 if warning else 0), lines
  if warning:
    assert warning in lines[0] and lines[0].startswith("--mixed_precision=%s: " % mode.lower()), lines[0]


def test_dynamic_loss_scale_values():
  """S = 8, growth after 2 finite steps: the gradients of S·loss divided by S are the gradients; a step
  with an infinite gradient changes nothing but S (halved) and the finite-step count (reset); two
  finite steps double S; S never falls below 1."""
  with tf.Graph().as_default():
    w = tf.get_variable("w", [2], initializer=tf.constant_initializer([1.0, 2.0]))
    x = tf.placeholder(tf.float32, [2])
    global_step = tf.train.get_or_create_global_step()
    scaling = precision.DynamicLossScale(initial=8.0, growth_steps=2)
    optimizer = tf.train.GradientDescentOptimizer(0.5)
    grads = scaling.unscaled(optimizer.compute_gradients(scaling.scaled(tf.reduce_sum(w * w * x))))
    train_op, applied = scaling.apply(lambda: optimizer.apply_gradients(grads, global_step=global_step), grads)
    with tf.Session() as sess:
      sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
      w_np, step = np.array([1.0, 2.0], np.float32), 0
      for feed, finite, used, after in (([1, 1], True, 8, 8), ([np.inf, 1], False, 8, 4), ([1, 3], True, 4, 4),
                                        ([1, 1], True, 4, 8), ([np.nan, 1], False, 8, 4)):
        out = sess.run({"op": train_op, "applied": applied, "S": scaling.current, "g": grads[0][0]}, {x: feed})
        assert out["applied"] == finite and out["S"] == used
        if finite:
          np.testing.assert_allclose(out["g"], 2 * w_np * np.array(feed, np.float32), rtol=1e-6)
          w_np, step = w_np - 0.5 * 2 * w_np * np.array(feed, np.float32), step + 1
        np.testing.assert_allclose(sess.run(w), w_np, rtol=1e-6)
        assert sess.run(global_step) == step and sess.run(scaling.scale) == after
      assert scaling.MIN_SCALE == 1.0
      for _ in range(6):
        sess.run(train_op, {x: [np.inf, 1]})
      assert sess.run(scaling.scale) == 1.0
  assert isinstance(precision.loss_scale("bfloat16"), precision.NoLossScale)
  assert not isinstance(precision.loss_scale("bfloat16"), precision.DynamicLossScale)


@pytest.fixture
def float16_graph(monkeypatch):
  """The float16 training graph wherever the tests run: a GPU said to be there (without one the
  rewrite converts nothing, and the arithmetic stays float32)."""
  monkeypatch.setattr(precision, "gpu_visible", lambda: True)


@pytest.mark.slow
def test_float16_trains_with_loss_scaling_records_its_precision_and_stops_when_it_diverges(
    frame_data, tmp_path, float16_graph, tf_log):
  """One run: 4 float16 steps (loss scaling: S = 2^15 logged, not checkpointed); resumed with
  --mixed_precision=bfloat16, which runs bfloat16 where the CPU has it and float32 after one warning
  line elsewhere, as model_flags.json then says; evaluated; then a divergent float16 run stops without
  saving."""
  train_dir = tmp_path / "fp16"
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=4", "--log_every_steps=2",
                        "--mixed_precision=float16"))
  assert json.load(open(str(train_dir / "model_flags.json")))["mixed_precision"] == "float16"
  assert any("loss_scale 3.277e+04" in line and "step 2 " in line for line in tf_log), tf_log[-5:]
  checkpoint = tf.train.latest_checkpoint(str(train_dir))
  assert checkpoint.endswith("-4")
  assert not [name for name, _ in tf.train.list_variables(checkpoint) if "loss_scale" in name]
  del tf_log[:]
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=6",
                        "--mixed_precision=bfloat16"))
  recorded = json.load(open(str(train_dir / "model_flags.json")))["mixed_precision"]
  assert recorded == precision.resolve("bfloat16")
  assert any(line.startswith("--mixed_precision=bfloat16: ") for line in tf_log) == (recorded == "none")
  result = eval_lib.Evaluator(str(train_dir), frame_data["validate"], 64).evaluate(
      tf.train.latest_checkpoint(str(train_dir)))
  assert result["global_step"] == 6 and result["mixed_precision"] == "none" and 0 <= result["gap"] <= 1
  with pytest.raises(train.Diverged, match=r"training diverged: .*newest checkpoint: .*model.ckpt-6"):
    train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=200",
                          "--base_learning_rate=1e30", "--mixed_precision=float16"))
  assert tf.train.latest_checkpoint(str(train_dir)).endswith("model.ckpt-6")


def test_bfloat16_cache_is_read_back_as_float32(tmp_path):
  """A bfloat16 cache record parsed as a KD run reads it: each value float32 rounded to the nearest
  bfloat16 (ties to even), computed in NumPy on the bits."""
  values = np.array([1.0, 1.00390625, 1.01171875, 1.0 + 3 * 2 ** -9, np.pi, -2.5e-3, 3.0e38, 1e-30],
                    np.float32)
  bits = values.view(np.uint32).astype(np.uint64)
  expected = (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
  assert expected[1] == 1.0 and expected[2] == 1.015625   # ties: to the even mantissa
  manifest = {"format": teacher_cache.FORMAT_VERSION, "dtype": "bfloat16", "teacher_checkpoint": "t",
              "global_step": 1, "teacher_model_flags": {}, "sizes": {"representation": len(values)}, "shards": {}}
  (tmp_path / teacher_cache.MANIFEST_FILE).write_text(json.dumps(manifest))
  cache = teacher_cache.TeacherCache(str(tmp_path))
  record = teacher_cache.encode(b"v1", {"representation": values}, "bfloat16")
  with tf.Graph().as_default(), tf.Session() as sess:
    parsed = sess.run(cache.parse(tf.constant(record)))
  assert parsed["video_ids"] == b"v1" and parsed["teacher_representation"].dtype == np.float32
  np.testing.assert_array_equal(parsed["teacher_representation"], expected)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [pytest.param("bfloat16", marks=NATIVE), pytest.param("float16", marks=GPU)])
def test_training_and_eval_in_16_bits_where_the_hardware_has_them(frame_data, tmp_path, mode):
  train_dir = tmp_path / mode
  train.main(train_args(frame_data, train_dir, "--model_type=teacher", "--max_steps=20",
                        "--mixed_precision=" + mode))
  assert json.load(open(str(train_dir / "model_flags.json")))["mixed_precision"] == mode
  evaluator = eval_lib.Evaluator(str(train_dir), frame_data["validate"], 64, mixed_precision=mode)
  result = evaluator.evaluate(tf.train.latest_checkpoint(str(train_dir)))
  assert result["mixed_precision"] == mode and np.isfinite(result["loss"]) and 0 < result["gap"] <= 1
  assert mode in _matmul_types(evaluator)


def _matmul_types(evaluator):
  """The dtypes of the matmuls of one batch of an Evaluator's session, as its rewrites left them."""
  run_metadata = tf.RunMetadata()
  evaluator.sess.run(evaluator.iterator_init)
  evaluator.sess.run(evaluator.fetch["predictions"], options=tf.RunOptions(output_partition_graphs=True),
                     run_metadata=run_metadata)
  return {tf.as_dtype(node.attr["T"].type).name for graph in run_metadata.partition_graphs
          for node in graph.node if "MatMul" in node.op and "T" in node.attr}

