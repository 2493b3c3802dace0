"""Exports a train_dir's checkpoint as a SavedModel for serving.

Signature `serving_default`: input `example_bytes` (serialized YouTube-8M records, the format the run
was trained on), outputs `video_id`, `class_indexes` and `predictions` (top --top_k, descending),
`frames_read` and `macs` (per video: the frames the model read, the multiply-adds it spent).
--exit_rule, --exit_threshold and --exit_stages export the student with early exit (early_exit.py).
The parsing, k-frame sampling and preprocessing are inside the graph, and every variable of the
model's scope is saved, batch-norm moving statistics included (the starter saved trainable ones only,
which breaks batch norm at serving time). A KD run exports its student alone. The checkpoint is the newest
intact one of the run (checkpoints.choose: a damaged newer one is passed over with a warning); a
damaged --checkpoint_file is refused, and so is a checkpoint with a non-finite variable (a diverged
run). A temporary folder left by a killed export is removed by the next one.
"""

import os
import sys

import tensorflow.compat.v1 as tf

import checkpoints
import config
import early_exit
import model_utils
import utils
from utils import InputError

flags = tf.flags

flags.DEFINE_string("export_dir", "",
                    "Where to write the SavedModel (default: <train_dir>/export/step_<global step>).")


def build_serving_graph(model_flags, top_k, staged=None):
  """Serialized records -> parsed (and k-sampled) frames -> model (with early exit: `staged`, an
  early_exit.Staged) -> top-k, frames read and multiply-adds spent. Returns (inputs, outputs)."""
  serialized = tf.placeholder(tf.string, [None], name="example_bytes")
  reader = model_utils.make_reader(model_flags) if staged is None else staged.reader()
  signature = {"video_ids": tf.string, "video_matrix": tf.float32, "num_frames": tf.int32,
               "labels": tf.float32}
  parsed = tf.map_fn(lambda record: reader.parse_record(tf.constant("serving input"), record),
                     serialized, fn_output_signature=signature)
  if staged is None:
    outputs = model_utils.with_frame_counts(model_flags, model_utils.build_model(
        model_flags, parsed["video_matrix"], parsed["num_frames"], is_training=False), parsed["num_frames"])
  else:
    outputs = staged.outputs(parsed["video_matrix"], parsed["num_frames"])
  top = tf.nn.top_k(outputs["predictions"], k=min(top_k, model_flags["num_classes"]))
  return ({"example_bytes": serialized},
          {"video_id": parsed["video_ids"], "class_indexes": top.indices, "predictions": top.values,
           "frames_read": outputs["frames_read"], "macs": outputs["macs"]})


def export(train_dir, checkpoint_file="", export_dir="", top_k=20, model_flags=None, staged=None):
  """Writes the SavedModel atomically (temporary folder, then rename); returns its path. `model_flags`
  (default: the run's) and `staged` (early exit) choose what is served."""
  model_flags = model_flags or config.load_model_flags(train_dir)
  graph = tf.Graph()
  with graph.as_default():
    inputs, outputs = build_serving_graph(model_flags, top_k, staged)
    global_step = tf.train.get_or_create_global_step()
    variables = model_utils.scope_variables(config.role_scope(model_flags)) + [global_step]
    checkpoint = checkpoints.choose(checkpoint_file or train_dir,
                                    "--checkpoint_file" if checkpoint_file else "--train_dir",
                                    needed=[v.op.name for v in variables])
    step = int(tf.train.load_checkpoint(checkpoint).get_tensor("global_step"))
    export_dir = export_dir or os.path.join(train_dir, "export", "step_%d" % step)
    if tf.io.gfile.exists(export_dir):
      raise InputError("--export_dir=%s already exists: nothing is overwritten; remove it or pick another"
                       % export_dir)
    saver = tf.train.Saver(variables)
    finite = {v.op.name: tf.reduce_all(tf.math.is_finite(v)) for v in variables
              if v.dtype.base_dtype.is_floating}
    with tf.Session(graph=graph) as sess:
      saver.restore(sess, checkpoint)
      bad = sorted(name for name, ok in sess.run(finite).items() if not ok)
      if bad:
        raise InputError("%s holds non-finite values (%s): the run diverged; export an earlier "
                         "checkpoint (--checkpoint_file)" % (checkpoint, ", ".join(bad[:3])))
      with utils.atomic_output(export_dir, overwrite=False) as tmp:
        builder = tf.saved_model.builder.SavedModelBuilder(tmp)
        signature = tf.saved_model.signature_def_utils.predict_signature_def(inputs, outputs)
        builder.add_meta_graph_and_variables(
            sess, [tf.saved_model.tag_constants.SERVING],
            signature_def_map={tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY:
                               signature},
            saver=tf.train.Saver(variables, sharded=True))
        builder.save()
  tf.logging.info("Exported %s (%s, %d variables) to %s.", checkpoint, config.role_scope(model_flags),
                  len(variables), export_dir)
  return export_dir


def run(opts):
  """export() with the flags; model flags given on the command line must agree with the run's (an
  any-k run takes --k_frame); --exit_rule, --exit_threshold, --exit_stages export early exit."""
  model_flags = config.run_model_flags(opts.train_dir, opts)
  return export(opts.train_dir, opts.checkpoint_file, opts.export_dir, opts.top_k, model_flags,
                early_exit.staged_from_flags(model_flags, opts, opts.train_dir))


main = utils.flag_program(run)

if __name__ == "__main__":
  utils.run_cli(main, sys.argv)
