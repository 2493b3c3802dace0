"""Writes a Kaggle submission (VideoId,LabelConfidencePairs; top --top_k classes, descending) for the
videos of --input_data_pattern, from a train_dir's checkpoint or from an exported SavedModel.

The model reads its frames exactly as in training (a student: its k frames by its sampling), because
the graph is rebuilt from train_dir/model_flags.json or was exported with its own input parsing.
The CSV is written to a temporary file and renamed at the end: an interrupted run (error, Ctrl-C,
SIGTERM) leaves no half file, and a temporary left by a killed one (SIGKILL) is removed by the next run.
Non-finite scores (a diverged checkpoint) stop the run with one line naming the checkpoint. The
checkpoint is the newest intact one of the run (checkpoints.choose: a damaged newer one is passed over
with a warning); a damaged --checkpoint_file is refused.
As in the starter, --output_model_tgz packs the run (checkpoint + model_flags.json) and
--input_model_tgz predicts from such a pack; model flags given on the command line (the seed's scripts
pass them) must agree with the run's model_flags.json. --exit_rule, --exit_threshold and --exit_stages
run the student with early exit (early_exit.py); an any-k run (--k_frame_choices) reads --k_frame
frames if given. The log ends with the frames read per video (mean, median, histogram) and the
multiply-adds spent.
"""

import io
import os
import sys
import tarfile
import time

import tensorflow.compat.v1 as tf

import checkpoints
import config
import early_exit
import model_utils
import precision
import readers
import utils
from utils import InputError

flags = tf.flags

# The model flags (config.py) are accepted as the starter's scripts pass them, checked against the run.
flags.DEFINE_string("output_model_tgz", "",
                    "Also pack the checkpoint used and model_flags.json into this .tgz (the starter's).")
flags.DEFINE_string("input_model_tgz", "",
                    "Predict with a .tgz written by --output_model_tgz instead of --train_dir.")
flags.DEFINE_string("untar_model_dir", "/tmp/yt8m-model/", "Where --input_model_tgz is unpacked.")
flags.DEFINE_string("saved_model_dir", "",
                    "Predict with this SavedModel (export_model.py) instead of a checkpoint.")
flags.DEFINE_string("output_file", "", "Kaggle CSV to write.")


def format_row(video_id, class_indexes, scores):
  """One CSV line: `id,class score class score ...` (scores to 6 decimals, given in descending order)."""
  if isinstance(video_id, bytes):
    video_id = video_id.decode("utf-8")
  pairs = " ".join("%d %.6f" % (c, s) for c, s in zip(class_indexes, scores))
  return "%s,%s\n" % (video_id, pairs)


def write_model_tgz(path, checkpoint, train_dir):
  """The starter's model archive: the checkpoint's files, a `checkpoint` index naming it, and
  model_flags.json, at the archive's top level; written through a temporary file."""
  tf.io.gfile.makedirs(os.path.dirname(os.path.abspath(path)))
  prefix = os.path.basename(checkpoint)
  index = ('model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' % (prefix, prefix)).encode()
  with utils.atomic_output(path) as tmp:
    with tarfile.open(tmp, "w:gz") as tar:
      for name in tf.io.gfile.glob(checkpoint + ".*"):
        tar.add(name, arcname=os.path.basename(name))
      tar.add(os.path.join(train_dir, config.MODEL_FLAGS_FILE), arcname=config.MODEL_FLAGS_FILE)
      info = tarfile.TarInfo("checkpoint")
      info.size = len(index)
      tar.addfile(info, io.BytesIO(index))
  tf.logging.info("Wrote %s (%s and %s).", path, prefix, config.MODEL_FLAGS_FILE)


def unpack_model_tgz(path, untar_dir):
  """Unpacks a --output_model_tgz archive into untar_dir; returns untar_dir (a train_dir)."""
  if not tf.io.gfile.exists(path):
    raise InputError("--input_model_tgz=%s: no such file" % path)
  try:
    with tarfile.open(path, "r:gz") as tar:
      names = tar.getnames()
      if config.MODEL_FLAGS_FILE not in names or "checkpoint" not in names or \
          any(os.path.basename(name) != name for name in names):
        raise InputError("--input_model_tgz=%s: expected a flat archive holding model_flags.json, "
                         "checkpoint and the checkpoint's files (inference.py --output_model_tgz), "
                         "found %s" % (path, ", ".join(names[:6])))
      tf.io.gfile.makedirs(untar_dir)
      tar.extractall(untar_dir, filter="data")
  except (tarfile.TarError, EOFError, OSError) as error:
    raise InputError("--input_model_tgz=%s is not a readable .tgz (%s)" % (path, error))
  return untar_dir


def _checkpoint_graph(opts, files, model_flags, staged=None):
  """The run's model (with early exit: `staged`, an early_exit.Staged) over `files` and its top
  --top_k: (graph, model_utils.build_evaluation_graph's parts with `fetch`, the tensors of a batch)."""
  graph = tf.Graph()
  with graph.as_default():
    parts = model_utils.build_evaluation_graph(model_flags, files, opts.batch_size, opts.num_readers,
                                               staged)
    outputs = parts["outputs"]
    top = tf.nn.top_k(outputs["predictions"], k=min(opts.top_k, model_flags["num_classes"]))
    parts["fetch"] = (parts["batch"]["video_ids"], top.indices, top.values, outputs["predictions"],
                      outputs["frames_read"], outputs["macs"])
  return graph, parts


def _batches_from_checkpoint(graph, parts, files, model_flags, checkpoint, mixed_precision="none"):
  """Yields (video_ids, class_indexes, scores, predictions, frames_read, macs) per batch from a
  train_dir checkpoint, restored into _checkpoint_graph's graph and parts, in `mixed_precision` (a
  resolved precision)."""
  with tf.Session(graph=graph, config=precision.session_config(mixed_precision)) as sess:
    parts["saver"].restore(sess, checkpoint)
    sess.run(parts["iterator_init"])
    tf.logging.info("Predicting with %s (%s reading %s frames).", checkpoint,
                    config.role_scope(model_flags), config.frames_read(model_flags) or "all")
    for values in readers.read_batches(sess, parts["fetch"], files, parts["reader"]):
      yield values


def _batches_from_saved_model(opts, files, mixed_precision="none"):
  """Yields (video_ids, class_indexes, scores, scores, frames_read, macs) per batch from an exported
  SavedModel (the last two None if its signature lacks them: an export older than early exit), in
  `mixed_precision` (a resolved precision)."""
  graph = tf.Graph()
  with graph.as_default():
    records = tf.data.make_one_shot_iterator(
        tf.data.TFRecordDataset(files).batch(opts.batch_size)).get_next()
  with tf.Session(graph=graph, config=precision.session_config(mixed_precision)) as sess:
    meta = tf.saved_model.loader.load(sess, [tf.saved_model.tag_constants.SERVING], opts.saved_model_dir)
    signature = meta.signature_def[tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY]
    inputs = signature.inputs["example_bytes"].name
    outputs = [signature.outputs[key].name for key in ("video_id", "class_indexes", "predictions")]
    counts = [signature.outputs[key].name for key in ("frames_read", "macs") if key in signature.outputs]
    for batch in readers.read_batches(sess, records, files):
      values = readers.run_on_input(sess, outputs + counts, files, None, {inputs: batch})
      video_ids, class_indexes, scores = values[:3]
      yield (video_ids, class_indexes, scores, scores) + (tuple(values[3:]) if counts else (None, None))


def run(opts):
  if not opts.output_file:
    raise InputError("--output_file is empty: expected the path of the CSV to write")
  files = readers.resolve_files(opts.input_data_pattern, "--input_data_pattern")
  mixed_precision = precision.resolve(opts.mixed_precision)
  if opts.saved_model_dir:
    if not tf.io.gfile.exists(os.path.join(opts.saved_model_dir, "saved_model.pb")):
      raise InputError("--saved_model_dir=%s holds no saved_model.pb" % opts.saved_model_dir)
    source, batches = opts.saved_model_dir, _batches_from_saved_model(opts, files, mixed_precision)
    frames = early_exit.FrameCount(None)
  else:
    train_dir = (unpack_model_tgz(opts.input_model_tgz, opts.untar_model_dir) if opts.input_model_tgz
                 else opts.train_dir)
    if isinstance(opts, flags.FlagValues):
      model_flags = config.run_model_flags(train_dir, opts)
      staged = early_exit.staged_from_flags(model_flags, opts, train_dir)
    else:
      model_flags, staged = config.load_model_flags(train_dir), None
    graph, parts = _checkpoint_graph(opts, files, model_flags, staged)
    frames = early_exit.FrameCount(parts["frame_bins"])
    source = checkpoints.choose(opts.checkpoint_file or train_dir,
                                "--checkpoint_file" if opts.checkpoint_file else "--train_dir",
                                needed=parts["restored"])
    if opts.output_model_tgz:
      write_model_tgz(opts.output_model_tgz, source, train_dir)
    batches = _batches_from_checkpoint(graph, parts, files, model_flags, source, mixed_precision)
  tf.io.gfile.makedirs(os.path.dirname(os.path.abspath(opts.output_file)))
  start, count = time.time(), 0
  with utils.atomic_output(opts.output_file) as tmp:
    with tf.io.gfile.GFile(tmp, "w") as out:
      out.write("VideoId,LabelConfidencePairs\n")
      for video_ids, class_indexes, scores, predictions, frames_read, macs in batches:
        model_utils.check_finite_predictions(predictions, video_ids, source)
        if frames_read is not None:
          frames.add(frames_read, macs)
        for row in range(len(video_ids)):
          k = min(opts.top_k, len(class_indexes[row]))
          out.write(format_row(video_ids[row], class_indexes[row][:k], scores[row][:k]))
        count += len(video_ids)
        tf.logging.info("%d videos predicted, %.0f videos/sec", count, count / (time.time() - start))
  tf.logging.info("Wrote %d videos to %s.", count, opts.output_file)
  if frames.frames:
    tf.logging.info("%s", early_exit.describe(frames.summary()))
  return count


main = utils.flag_program(run)

if __name__ == "__main__":
  utils.run_cli(main, sys.argv)
