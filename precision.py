"""Mixed precision (--mixed_precision): TensorFlow's own grappler rewrites, switched on in the session
config every program builds (session_config), and dynamic loss scaling for float16 training.

- `bfloat16`: grappler's oneDNN rewrite (`auto_mixed_precision_onednn_bfloat16`) runs the matmuls and
  the element-wise ops between them on the CPU in bfloat16. TensorFlow registers it only when its
  oneDNN optimisations are on (by default on CPUs with AVX512-VNNI/BF16 or AMX;
  TF_ENABLE_ONEDNN_OPTS=1 forces them); without them it ignores the setting silently.
- `float16`: grappler's CUDA rewrite (`auto_mixed_precision`) does the same on GPUs in float16 (it
  leaves CPU ops alone). float16's range is small, so training scales its loss (DynamicLossScale).
- Both rewrites keep the variables float32 (their reads are cast), and keep float32 the ops of their
  deny lists (Softmax, Log, Exp, Sum, Mean, the losses, ...): the optimizer's slots, the loss sums and
  the metrics stay float32, and a checkpoint is the same whatever precision wrote it.
- precise_bn.py (and the teacher statistics train.py and cache_teacher.py have it recompute) runs
  float32: population statistics are sums over many batches.

Where the hardware is missing (resolve): bfloat16 on a CPU without AVX512-BF16 or AMX-BF16, or with
oneDNN off, and float16 without a GPU, run float32 after one warning line (docs/BENCHMARKS.md measured
oneDNN's bfloat16 emulation at 0.4-0.96x of float32 on an AMD EPYC, live KD excepted). Forcing oneDNN on (TF_ENABLE_ONEDNN_OPTS=1) keeps
the emulated bfloat16, with a warning, for numerics studies on such machines.
"""

import os

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

MODES = ("none", "bfloat16", "float16")
# The grappler rewrite of each precision (a RewriterConfig field).
REWRITES = {"bfloat16": "auto_mixed_precision_onednn_bfloat16", "float16": "auto_mixed_precision"}
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")   # /proc/cpuinfo: native bfloat16 arithmetic


def cpu_flags(path="/proc/cpuinfo"):
  """The CPU's feature flags (the first `flags` line of /proc/cpuinfo); empty where unreadable."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("flags"):
          return set(line.split(":", 1)[1].split())
  except OSError:
    pass
  return set()


def native_bfloat16():
  """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
  return bool(cpu_flags() & set(BFLOAT16_CPU_FLAGS))


def onednn_enabled():
  """Whether TensorFlow's oneDNN optimisations are on in this process (the bfloat16 rewrite exists
  only then)."""
  try:
    from tensorflow.python.util import _pywrap_util_port
  except ImportError:
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"
  return bool(_pywrap_util_port.IsMklEnabled())


def gpu_visible():
  return bool(tf.config.list_physical_devices("GPU"))


def unavailable(mode):
  """Why `mode` cannot run as asked on this machine (one phrase), or None."""
  if mode == "bfloat16":
    if not native_bfloat16() and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "1":
      return ("this CPU has no AVX512-BF16 or AMX-BF16 (/proc/cpuinfo flags %s), so oneDNN would emulate "
              "bfloat16, slower than float32 (docs/BENCHMARKS.md)" % "/".join(BFLOAT16_CPU_FLAGS))
    if not onednn_enabled():
      return ("TensorFlow's oneDNN optimisations are off (TF_ENABLE_ONEDNN_OPTS), and without them it "
              "ignores the bfloat16 rewrite")
  if mode == "float16" and not gpu_visible():
    return "no GPU is visible, and grappler's float16 rewrite converts GPU ops only"
  return None


def resolve(mode, flag="--mixed_precision"):
  """The precision a program runs in for `mode` (one of MODES, any case): `mode`, or "none" after one
  warning line where this machine cannot run it (unavailable)."""
  mode = str(mode).lower()
  reason = unavailable(mode) if mode != "none" else None
  if reason:
    tf.logging.warning("%s=%s: %s; running in float32.", flag, mode, reason)
    return "none"
  if mode == "bfloat16" and not native_bfloat16():
    tf.logging.warning("%s=bfloat16: this CPU has no AVX512-BF16 or AMX-BF16 and TF_ENABLE_ONEDNN_OPTS=1 "
                       "forces oneDNN on: it emulates bfloat16, slower than float32 (for numerics studies).",
                       flag)
  return mode


def session_config(mode, **kwargs):
  """A tf.ConfigProto(**kwargs) with `mode`'s grappler rewrite switched on (nothing for "none")."""
  session = tf.ConfigProto(**kwargs)
  if mode != "none":
    setattr(session.graph_options.rewrite_options, REWRITES[mode], rewriter_config_pb2.RewriterConfig.ON)
  return session


class NoLossScale(object):
  """float32 and bfloat16 training: the loss and gradients as they are."""

  def scaled(self, loss):
    return loss

  def unscaled(self, grads_and_vars):
    return grads_and_vars

  def apply(self, apply_fn, grads_and_vars):
    """(train op, None): apply_fn() builds the optimizer's update."""
    return apply_fn(), None


class DynamicLossScale(NoLossScale):
  """float16 training: the gradients are those of S·loss, divided by S, so that small gradients do
  not underflow in float16. A step whose gradients are not all finite is skipped (no update, the
  global step unchanged) and halves S (not below MIN_SCALE); after `growth_steps` finite steps in a
  row S doubles (not above MAX_SCALE). S starts at `initial`. S and the count of finite steps are
  local float32/int64 variables under `loss_scale/`: not checkpointed (a checkpoint is the same in
  every precision), restarted at `initial` by a resumed run."""

  SCOPE = "loss_scale"
  MIN_SCALE, MAX_SCALE = 1.0, 2.0 ** 24

  def __init__(self, initial=2.0 ** 15, growth_steps=2000):
    # Resource variables: a read is a snapshot that the step's update does not change.
    local = dict(trainable=False, collections=[tf.GraphKeys.LOCAL_VARIABLES], use_resource=True)
    with tf.variable_scope(self.SCOPE):
      self.scale = tf.get_variable("scale", [], tf.float32, tf.constant_initializer(initial), **local)
      self.finite_steps = tf.get_variable("finite_steps", [], tf.int64, tf.zeros_initializer(), **local)
    self.growth_steps = growth_steps
    self.current = self.scale.read_value()   # S of this step

  def scaled(self, loss):
    return loss * self.current

  def unscaled(self, grads_and_vars):
    return [(g / self.current if g is not None else None, v) for g, v in grads_and_vars]

  def apply(self, apply_fn, grads_and_vars):
    """(train op, scalar bool: this step's gradients were all finite and were applied)."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g, _ in grads_and_vars if g is not None])

    def update():
      grown = tf.equal(self.finite_steps + 1, self.growth_steps)
      with tf.name_scope(None):  # the optimizer's variables (Adam's beta powers) named as without the cond
        applied = apply_fn()
      with tf.control_dependencies([applied]):
        return tf.group(
            tf.assign(self.scale, tf.where(grown, tf.minimum(2.0 * self.current, self.MAX_SCALE), self.current)),
            tf.assign(self.finite_steps, tf.where(grown, tf.zeros([], tf.int64), self.finite_steps + 1)))

    def skip():
      return tf.group(tf.assign(self.scale, tf.maximum(self.current / 2.0, self.MIN_SCALE)),
                      tf.assign(self.finite_steps, tf.zeros([], tf.int64)))

    return tf.cond(finite, update, skip), finite


def loss_scale(mode):
  """The loss scaling of a training run in `mode` (a resolved precision)."""
  return DynamicLossScale() if mode == "float16" else NoLossScale()
