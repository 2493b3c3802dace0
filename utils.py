"""Small shared helpers: (de)quantization, feature-flag parsing, one-line input errors, summaries,
atomic outputs (temporary name, rename, stale temporaries of dead writers removed) and the lock a
training run holds on its train_dir."""

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

MAX_QUANTIZED_VALUE = 2.0
MIN_QUANTIZED_VALUE = -2.0


class InputError(Exception):
  """Bad user input (file, flag, feature). Command-line programs print it as one line and exit 2."""


def dequantize(feat_vector, max_quantized_value=MAX_QUANTIZED_VALUE,
               min_quantized_value=MIN_QUANTIZED_VALUE):
  """uint8 (or float holding 0..255) tensor -> float32 in [min, max]: q*4/255 + 4/512 - 2."""
  quantized_range = max_quantized_value - min_quantized_value
  scalar = quantized_range / 255.0
  bias = (quantized_range / 512.0) + min_quantized_value
  return tf.cast(feat_vector, tf.float32) * scalar + bias


def quantize(features, max_quantized_value=MAX_QUANTIZED_VALUE,
             min_quantized_value=MIN_QUANTIZED_VALUE):
  """NumPy float array -> uint8 with the YouTube-8M quantizer (clip, then round((x+2)*255/4))."""
  quantized_range = max_quantized_value - min_quantized_value
  clipped = np.clip(features, min_quantized_value, max_quantized_value)
  return np.round((clipped - min_quantized_value) * 255.0 / quantized_range).astype(np.uint8)


def dequantize_np(quantized, max_quantized_value=MAX_QUANTIZED_VALUE,
                  min_quantized_value=MIN_QUANTIZED_VALUE):
  """NumPy twin of `dequantize`, for tests and data generation."""
  quantized_range = max_quantized_value - min_quantized_value
  return (quantized.astype(np.float32) * (quantized_range / 255.0)
          + (quantized_range / 512.0 + min_quantized_value))


def get_list_of_feature_names_and_sizes(feature_names, feature_sizes):
  """Parses the comma-separated --feature_names / --feature_sizes flags into two equal-length lists."""
  names = [name.strip() for name in str(feature_names).split(",") if name.strip()]
  try:
    sizes = [int(size) for size in str(feature_sizes).split(",") if size.strip()]
  except ValueError:
    raise InputError("--feature_sizes=%r: expected comma-separated integers such as '1024,128'"
                     % feature_sizes)
  if not names:
    raise InputError("--feature_names is empty: expected names such as 'rgb,audio'")
  if len(names) != len(sizes):
    raise InputError("--feature_names=%r has %d names but --feature_sizes=%r has %d sizes"
                     % (feature_names, len(names), feature_sizes, len(sizes)))
  if any(size <= 0 for size in sizes):
    raise InputError("--feature_sizes=%r: every size must be a positive integer" % feature_sizes)
  return names, sizes


def scalar_summary(tag, value):
  """A tf.Summary protobuf holding one scalar, for writing Python-side values to TensorBoard."""
  return tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=float(value))])


def read_json(path, expected):
  """The JSON object in `path`; InputError naming the file and `expected` (what it should hold) if it
  cannot be read or is not a JSON object (a copy cut short, a file of something else)."""
  try:
    with tf.io.gfile.GFile(path) as f:
      value = json.load(f)
  except (ValueError, UnicodeDecodeError, tf.errors.OpError) as error:
    raise InputError("%s is not valid JSON (%s): expected %s" % (path, str(error).splitlines()[0][:120],
                                                                  expected))
  if not isinstance(value, dict):
    raise InputError("%s holds a JSON %s: expected %s" % (path, type(value).__name__, expected))
  return value


def error_line(error):
  """The informative line of an error or error message, at most 300 characters: of a TensorFlow
  error, the status after "Graph execution error:", the node and where it was defined (not the
  [[node]] and Hint lines)."""
  lines = [line.strip() for line in (getattr(error, "message", None) or str(error)).splitlines()]
  nodes = [i for i, line in enumerate(lines) if line.startswith("Node: '")]
  lines = [line for line in lines[nodes[-1] + 1 if nodes else 0:]
           if line and not line.startswith(("[[", "Hint:")) and "Graph execution error" not in line]
  return (lines[0] if lines else str(error).strip() or type(error).__name__)[:300]


def lookup(table, name, flag_name):
  """table[name] for a registry {name: class} (models, classifiers, label losses); InputError naming
  the flag and the registered names otherwise."""
  if name not in table:
    raise InputError("--%s=%r: unknown, expected one of %s" % (flag_name, name, ", ".join(sorted(table))))
  return table[name]


class Terminated(KeyboardInterrupt):
  """SIGTERM, raised in the main thread like Ctrl-C, so cleanups and `finally` blocks run."""


def _raise_terminated(signum, frame):
  raise Terminated()


def flag_program(run):
  """The `main(argv)` of a flag-driven program (train.py, eval.py, ...): parses argv (argv[0] the
  program name) into the absl FLAGS, where a bad flag value becomes an InputError, sets up logging and
  returns run(FLAGS). In-process callers (the study, the tests) call it as the command line does."""
  def main(argv):
    flag_values = tf.flags.FLAGS
    flag_values.unparse_flags()
    try:
      flag_values(list(argv))
    except tf.flags.Error as error:
      raise InputError(str(error).splitlines()[0])
    setup_logging()
    return run(flag_values)
  main.__doc__ = "Runs %s.%s with the flags of argv (argv[0]: the program name)." % (
      run.__module__, run.__name__)
  return main


def run_cli(main, argv):
  """Runs a program's `main(argv)` as a command: graph-mode TensorFlow; bad input (InputError, a bad
  flag) is one line `error: ...` on stderr and exit status 2; SIGTERM becomes `Terminated` (a
  KeyboardInterrupt), so temporaries are removed and locks released, and exits 128 + 15."""
  tf.disable_v2_behavior()
  signal.signal(signal.SIGTERM, _raise_terminated)
  try:
    main(argv)
  except Terminated:
    sys.stderr.write("error: stopped by SIGTERM\n")
    sys.exit(128 + signal.SIGTERM)
  except InputError as error:
    sys.stderr.write("error: %s\n" % error)
    sys.exit(2)
  except tf.flags.Error as error:
    sys.stderr.write("error: %s\n" % str(error).splitlines()[0])
    sys.exit(2)


# -- processes, atomic outputs ------------------------------------------------------------------------
HOST = socket.gethostname()
TEMP_MARK = ".tmp-"


def process_alive(pid):
  """Whether process `pid` of this host still runs (a zombie, finished but not yet reaped, does not)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  try:
    with open("/proc/%d/stat" % pid) as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return not os.path.isdir("/proc/self")  # without /proc, os.kill is the answer
  except (OSError, IndexError):
    return True


def temp_path(path):
  """This process's temporary name for `path`: PATH.tmp-HOST-PID (a rerun can tell whose it is)."""
  return "%s%s%s-%d" % (path.rstrip("/"), TEMP_MARK, HOST, os.getpid())


def remove_stale_temps(path):
  """Removes the temporaries of `path` (files or folders) left by writers of this host that no longer
  run (killed, even by SIGKILL); those of live writers and of other hosts are kept. Returns them."""
  removed = []
  for tmp in tf.io.gfile.glob(path.rstrip("/") + TEMP_MARK + "*"):
    host, _, pid = tmp[len(path.rstrip("/")) + len(TEMP_MARK):].rpartition("-")
    if host != HOST or not pid.isdigit() or process_alive(int(pid)):
      continue
    if tf.io.gfile.isdir(tmp):
      tf.io.gfile.rmtree(tmp)
    else:
      tf.io.gfile.remove(tmp)
    tf.logging.info("Removed %s, left by a writer that no longer runs.", tmp)
    removed.append(tmp)
  return removed


def _remove(path):
  if tf.io.gfile.isdir(path):
    tf.io.gfile.rmtree(path)
  elif tf.io.gfile.exists(path):
    tf.io.gfile.remove(path)


@contextlib.contextmanager
def atomic_output(path, overwrite=True):
  """`with atomic_output(path) as tmp:` write the file or folder `tmp`; on success it is renamed to
  `path`, on any exception (Ctrl-C and SIGTERM under run_cli included) removed. Stale temporaries of
  `path` from dead writers are removed first, so a killed run leaves nothing behind after a rerun."""
  remove_stale_temps(path)
  tmp = temp_path(path)
  _remove(tmp)
  try:
    yield tmp
    tf.io.gfile.rename(tmp, path, overwrite=overwrite)
  except BaseException:
    _remove(tmp)
    raise


def write_json_atomic(path, value):
  """Writes JSON to `path` through a temporary file and a rename: readers never see half a file."""
  with atomic_output(path) as tmp:
    with tf.io.gfile.GFile(tmp, "w") as f:
      json.dump(value, f, indent=2, sort_keys=True)


class DirLock(object):
  """Exclusive ownership of a folder by one process: `folder/.lock`, holding the owner's pid, host and
  start time, under an advisory flock. The kernel drops the flock when the owner ends, even by SIGKILL,
  so a lock file left by a dead owner is stale and taken over (on this host or, over NFS, another).
  acquire() raises InputError naming the live owner. On a file system without flock (an object store
  such as gs://) no lock is taken and a warning says so."""

  NAME = ".lock"

  def __init__(self, folder, what="--train_dir"):
    self.path = os.path.join(folder, self.NAME)
    self.folder, self.what, self.fd = folder, what, None

  def acquire(self):
    if "://" in self.folder:
      tf.logging.warning("%s=%s is not a local file system: no lock; do not run two trainers on it.",
                         self.what, self.folder)
      return self
    os.makedirs(self.folder, exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as error:
        os.close(fd)
        if error.errno not in (errno.EAGAIN, errno.EACCES):
          tf.logging.warning("%s=%s: cannot lock (%s): no lock; do not run two trainers on it.",
                             self.what, self.folder, error)
          return self
        raise InputError("%s=%s is in use by %s: one run per train_dir (wait for it to end, or "
                         "choose another --train_dir)" % (self.what, self.folder, self._describe()))
      try:  # the file may have been released and removed between our open and our flock
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    previous = self._describe(fd)
    if previous:
      tf.logging.warning("%s=%s: took over the lock left by %s, which no longer runs.",
                         self.what, self.folder, previous)
    record = json.dumps({"pid": os.getpid(), "host": HOST, "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    os.fsync(fd)
    self.fd = fd
    return self

  def _describe(self, fd=None):
    try:
      if fd is None:
        with open(self.path, "rb") as f:
          text = f.read()
      else:
        text = os.pread(fd, 4096, 0)
      holder = json.loads(text.decode() or "null")
    except (OSError, ValueError):
      holder = None
    if not holder:
      return "" if fd is not None else "another process (starting)"
    return "pid %s on host %s (started %s)" % (holder.get("pid"), holder.get("host"), holder.get("started"))

  def release(self):
    if self.fd is not None:
      os.remove(self.path)  # before the unlock: a waiting process then finds the path gone and retries
      os.close(self.fd)
      self.fd = None


def setup_logging(verbosity=tf.logging.INFO):
  """TensorFlow log level, each line printed once (the root handler absl installs would repeat it)."""
  tf.get_logger().propagate = False
  tf.logging.set_verbosity(verbosity)
