"""Small shared helpers: (de)quantization, feature-flag parsing, one-line input errors, summaries."""

import json
import sys

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


def run_cli(entry, argv):
  """Runs a command-line entry point: bad input (InputError, a bad flag) is one line on stderr, exit 2."""
  try:
    entry(argv)
  except InputError as error:
    sys.stderr.write("error: %s\n" % error)
    sys.exit(2)
  except tf.flags.Error as error:
    sys.stderr.write("error: %s\n" % str(error).splitlines()[0])
    sys.exit(2)


def write_json_atomic(path, value):
  """Writes JSON to `path` through a temporary file and a rename: readers never see half a file."""
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def setup_logging(verbosity=tf.logging.INFO):
  """TensorFlow log level, each line printed once (the root handler absl installs would repeat it)."""
  tf.get_logger().propagate = False
  tf.logging.set_verbosity(verbosity)
