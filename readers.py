"""YouTube-8M readers on tf.data: frame-level (SequenceExample) and video-level (Example) shards.

Each batch is a dict of tensors:
  video_ids     [B] string          (2018 key `id`, 2017 key `video_id`)
  video_matrix  [B, F, D] float32   frame level: F = max_frames, or k_frame for a student;
                [B, D]              video level
  num_frames    [B] int32           valid frames in video_matrix (1 at video level)
  labels        [B, num_classes]    multi-hot float32 (all zero where a record has no `labels`: test split)
and, with `also_full_frames`, `full_video_matrix` / `full_num_frames` (all frames, for a KD teacher);
with a teacher cache, `teacher_predictions`, `teacher_representation` (and `teacher_logits`).

The student's frames are chosen from each video's own length *before* decoding, so the frames it drops
are never decoded or dequantized (see `sample_frame_indices` and bench/bench_readers.py).
"""

import os
import re
import struct

import tensorflow.compat.v1 as tf
from google.protobuf import message as message_lib

import utils
from utils import InputError

FRAME_SAMPLING_METHODS = ("uniform", "random", "first", "middle", "last", "first_middle_last",
                          "strided")
# Not a --frame_sampling choice: the staged reads of early exit (early_exit.py), the uniform-k frames in
# an order whose prefix at each stage is as close to that stage's uniform frames as nesting allows
# (nested_order).
NESTED = "nested"
ERROR_MARKER = "YT8M_INPUT_ERROR"


def strided_positions(k, max_frames=300):
  """The seed's student positions 0:max_frames:max_frames//k (its `frame_step = int(300 / k_frame)`):
  ceil(max_frames / step) of them, which is k only when the step divides max_frames evenly
  (k=7 gives 8 positions, 0, 42, ..., 294)."""
  return list(range(0, max_frames, max(max_frames // k, 1)))


def sampled_frame_count(k, method, max_frames=300):
  """Frames a student's matrix holds: k, or the strided positions' count."""
  return len(strided_positions(k, max_frames)) if method == "strided" else k


def nested_order(m, stages):
  """An order of positions 0..m-1 whose first min(n, m) entries, for each n of `stages` (increasing;
  the last at least m), are spread like the uniform-n positions floor(i·m/n): each stage takes first
  the uniform-n positions not taken yet, the one farthest from those already taken first (ties: the
  one farthest from the last taken, then the earliest), then, if it needs more, any position by the
  same rule. A stage whose n divides m (every
  n dividing the last stage) thus reads exactly its uniform positions when the stages before it are
  among them, e.g. 6 then 30."""
  order = []

  def farthest(candidates):
    return max(candidates, key=lambda i: (min(abs(i - j) for j in order), abs(i - order[-1]), -i)
               if order else (0, 0, -i))

  for n in stages:
    targets = sorted({i * m // n for i in range(min(n, m))} - set(order))
    while len(order) < min(n, m):
      order.append(farthest(targets or [i for i in range(m) if i not in order]))
      targets = [t for t in targets if t != order[-1]]
  return order


def nested_order_table(stages):
  """[k + 1, k] table, k = stages[-1]: row m is nested_order(m, stages) followed by m, ..., k - 1
  (the padding slots of a video with m < k frames)."""
  k = stages[-1]
  return [nested_order(m, stages) + list(range(m, k)) for m in range(k + 1)]


def sample_frame_indices(num_frames, k, method, max_frames=300, seed=None, key=None, stages=None):
  """Chooses k frame positions of one video with `num_frames` frames (a scalar int32 tensor).

  Returns (indices [F] int32, count int32), F = sampled_frame_count(k, method, max_frames) (k for
  every method but strided): the first `count` entries are frame positions in time
  order; the remaining entries equal `num_frames` and mark padding. Methods (the paper's baselines):
    uniform            every (n/k)-th frame, floor(i*n/k), i < k: deterministic, spans the video.
    random             k distinct frames in time order, drawn afresh at every read (every epoch); with
                       `key` (an int64 scalar, e.g. a hash of the video id) the draw is a function of
                       the key, so evaluation, inference and a SavedModel see the same frames each time.
    first/middle/last  k consecutive frames at the start, centre or end.
    first_middle_last  k - 2*(k//3) frames at the start, k//3 at the centre, k//3 at the end.
    strided            the seed's fixed positions 0, s, 2s, ... < max_frames with s = max_frames // k
                       (strided_positions), regardless of the video's length; positions past its
                       end are padding.
    nested             uniform's frames (all n when n <= k) in nested_order(min(n, k), stages) (stages:
                       increasing, the last k; default [k]): early exit's stages read prefixes of
                       them. Not in time order.
  When n <= k (every method but strided) all n frames are taken in order and the rest is padding:
  the student then sees exactly what the teacher sees, never a repeated frame. `k` may be an int32
  scalar tensor (an any-k student's per-batch draw; not for nested).
  """
  if method not in FRAME_SAMPLING_METHODS + (NESTED,):
    raise InputError("--frame_sampling=%r: expected one of %s" % (method, ", ".join(FRAME_SAMPLING_METHODS)))
  n = tf.cast(num_frames, tf.int32)
  positions = tf.range(k, dtype=tf.int32)
  if method == "strided":
    indices = (tf.constant(strided_positions(k, max_frames), tf.int32) if isinstance(k, int) else
               tf.range(0, max_frames, tf.maximum(max_frames // k, 1)))
  elif method == NESTED:
    m = tf.minimum(n, k)
    order = tf.gather(tf.constant(nested_order_table(stages or [k]), tf.int32), m)  # [k]
    uniform = tf.where(n > k, (positions * n) // k, positions)
    indices = tf.where(order < m, tf.gather(uniform, order), tf.fill([k], n))
  else:
    if method == "uniform":
      chosen = (positions * n) // k
    elif method == "first":
      chosen = positions
    elif method == "last":
      chosen = n - k + positions
    elif method == "middle":
      chosen = (n - k) // 2 + positions
    elif method == "first_middle_last":
      n_middle = n_last = k // 3
      n_first = k - n_middle - n_last
      middle_start = tf.clip_by_value((n - n_middle) // 2, n_first, n - n_last - n_middle)
      chosen = tf.concat([tf.range(n_first), middle_start + tf.range(n_middle),
                          n - n_last + tf.range(n_last)], axis=0)
    else:  # random
      def draw():
        if key is None:
          scores = tf.random.uniform([n], seed=seed)
        else:
          scores = tf.random.stateless_uniform([n], seed=tf.stack([key, tf.constant(seed or 0, tf.int64)]))
        return tf.sort(tf.nn.top_k(scores, k=k, sorted=False).indices)
      chosen = tf.cond(n > k, draw, lambda: positions)
    indices = tf.where(n > k, chosen, positions)
  valid = indices < n
  count = tf.reduce_sum(tf.cast(valid, tf.int32))
  return tf.where(valid, indices, tf.fill(tf.shape(indices), n)), count


def resolve_files(data_pattern, flag_name="--input_data_pattern"):
  """Expands a comma-separated list of glob patterns; raises InputError naming the flag if none match."""
  if not data_pattern:
    raise InputError("%s is empty: expected a glob such as /data/train*.tfrecord" % flag_name)
  files = []
  for pattern in str(data_pattern).split(","):
    files.extend(sorted(tf.io.gfile.glob(pattern.strip())))
  if not files:
    raise InputError("%s=%r matches no file" % (flag_name, data_pattern))
  return files


def check_tfrecord_framing(path):
  """Walks the record headers of a local TFRecord file (seeks only) and raises InputError if it is
  truncated or not a TFRecord file. Returns (number of records, first record's bytes or None).
  Content CRCs are checked by TF while reading; `explain_data_error` names the file if one fails."""
  if tf.io.gfile.isdir(path):
    raise InputError("%s is a folder: expected TFRecord files only (narrow the data pattern)" % path)
  try:
    if "://" in path:  # Remote file systems: only the first record.
      return None, next(iter(tf.io.tf_record_iterator(path)), None)
    return _walk_tfrecord(path)
  except (OSError, tf.errors.PermissionDeniedError, tf.errors.NotFoundError) as error:
    raise InputError("%s cannot be read (%s): expected a readable TFRecord file"
                     % (path, getattr(error, "strerror", None) or str(error).splitlines()[0][:200]))


def _walk_tfrecord(path):
  size = os.path.getsize(path)
  offset, count, first = 0, 0, None
  with open(path, "rb") as f:
    while offset < size:
      header = f.read(12)
      if len(header) < 12:
        raise InputError("%s is truncated: record %d header cut at byte %d of %d" % (path, count, offset, size))
      (length,) = struct.unpack("<Q", header[:8])
      end = offset + 12 + length + 4
      if end > size:
        raise InputError("%s is truncated or not a TFRecord file: record %d at byte %d claims %d bytes, "
                         "only %d remain" % (path, count, offset, length, size - offset - 16))
      if count == 0:
        first = f.read(length)
      f.seek(end)
      offset, count = end, count + 1
  return count, first


class _BaseReader(object):
  """Shared dataset plumbing: file discovery, validation, interleaved reads, batching, errors."""

  frame_level = None
  k_frame_choices = ()  # an any-k student's frame counts (frame level only)

  def __init__(self, num_classes=3862, feature_names=("rgb", "audio"), feature_sizes=(1024, 128)):
    if len(feature_names) != len(feature_sizes):
      raise InputError("--feature_names %s and --feature_sizes %s differ in length"
                       % (list(feature_names), list(feature_sizes)))
    self.num_classes = int(num_classes)
    self.feature_names = list(feature_names)
    self.feature_sizes = [int(s) for s in feature_sizes]

  # -- validation before any expensive work ---------------------------------------------------------
  def validate_files(self, files, max_content_checks=4):
    """Framing check of every file, content check of the first record of the first few files.
    Returns each file's record count (None for a remote file)."""
    checked, counts = 0, []
    for path in files:
      count, first_record = check_tfrecord_framing(path)
      counts.append(count)
      if first_record is not None and checked < max_content_checks:
        self._check_record(path, first_record)
        checked += 1
    if all(count == 0 for count in counts):
      raise InputError("%s: %s no record: expected YouTube-8M TFRecord shards with videos"
                       % (", ".join(files[:3]) + (" ..." if len(files) > 3 else ""),
                          "the file holds" if len(files) == 1 else "the files hold"))
    return counts

  def _check_labels(self, where, features):
    if "labels" in features:
      labels = list(features["labels"].int64_list.value)
      bad = [label for label in labels if label < 0 or label >= self.num_classes]
      if bad:
        raise InputError("%s: label id %d is outside [0, %d): expected --num_classes > %d "
                         "(YouTube-8M 2018 has 3862 classes, 2017 has 4716)"
                         % (where, bad[0], self.num_classes, max(bad)))

  def find_bad_record(self, path):
    """Reads `path` record by record (slow: only to explain an error) and returns an InputError naming
    the first record the Python checks refuse (file, video id, what was expected), or None."""
    for number, record in enumerate(tf.io.tf_record_iterator(path)):
      try:
        self._check_record(path, record)
      except InputError as error:
        return error
      except message_lib.DecodeError:
        return InputError("%s: record %d cannot be parsed as a %s (expected YouTube-8M %s-level "
                          "records; --frame_features)" % (path, number, "SequenceExample"
                                                          if self.frame_level else "Example",
                                                          "frame" if self.frame_level else "video"))
    return None

  # -- dataset ---------------------------------------------------------------------------------------
  def dataset(self, files, batch_size, training, num_readers=8, num_epochs=None, shuffle_buffer=2048,
              drop_remainder=None, seed=None, teacher_cache=None, deterministic=False):
    """Batches from `files`. Training: files and records shuffled, repeated `num_epochs` times (None:
    forever), full batches only; in the order the parallel reads finish unless `deterministic` (then
    the same `seed` gives the same batches). Evaluation: one deterministic pass, every record once, the
    last partial batch kept. With `teacher_cache` (a teacher_cache.TeacherCache) each file is read in step
    with its cache shard and each record's id checked against the cache's before shuffling; batches
    then also hold the cached `teacher_<output>` vectors."""
    if drop_remainder is None:
      drop_remainder = training
    if teacher_cache is None:
      files_ds = tf.data.Dataset.from_tensor_slices(list(files))
      read_file = lambda f: tf.data.TFRecordDataset(f).map(lambda r: (f, r))
      parse = lambda f, r, *k: self.parse_record(f, r, training, *k)   # k: an any-k batch's draw
    else:
      files_ds = tf.data.Dataset.from_tensor_slices((list(files), [teacher_cache.path_for(f) for f in files]))
      read_file = lambda f, c: tf.data.Dataset.zip(
          (tf.data.TFRecordDataset(f), tf.data.TFRecordDataset(c))).map(lambda r, cr: (f, r, cr))
      parse = lambda f, r, cr, *k: self._parse_with_cache(f, r, cr, training, teacher_cache, *k)
    # The dataset functions are plain graph code: skipping AutoGraph's source conversion of them
    # (parse_record and what it calls) saves seconds of every graph build (bench/bench_costs.py).
    read_file, parse = tf.autograph.experimental.do_not_convert(read_file), \
        tf.autograph.experimental.do_not_convert(parse)
    if training:
      files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
      files_ds = files_ds.repeat(num_epochs)
    records = files_ds.interleave(
        read_file, cycle_length=max(1, min(num_readers, len(files))), block_length=1,
        **({"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": deterministic} if training else {}))
    if training:
      records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    any_k = training and bool(self.k_frame_choices)
    if any_k:
      records = tf.data.Dataset.zip((records, self._batch_ks(batch_size, seed))).map(
          lambda record, k: record + (k,))
    # An any-k batch needs its videos in draw order (one k per batch): a deterministic parse.
    videos = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                         deterministic=any_k or deterministic or not training)
    return videos.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)

  def _batch_ks(self, batch_size, seed):
    """The any-k draw: k uniform over k_frame_choices, one per batch, repeated for its batch_size videos."""
    choices = tf.constant(self.k_frame_choices, tf.int32)
    draws = tf.data.Dataset.random(seed=seed).map(
        lambda r: tf.gather(choices, tf.cast(r % len(self.k_frame_choices), tf.int32)))
    return draws.flat_map(lambda k: tf.data.Dataset.from_tensors(k).repeat(batch_size))

  def _parse_with_cache(self, filename, serialized, cached, training, teacher_cache, k=None):
    """A video and its teacher's cached outputs; fails naming the file if the two ids differ."""
    video = self.parse_record(filename, serialized, training, k)
    teacher = teacher_cache.parse(cached)
    cached_id = teacher.pop("video_ids")
    check = tf.debugging.assert_equal(
        cached_id, video["video_ids"],
        message="%s teacher cache record has another video id than the data record (expected the cache "
        "shard written from this shard, record for record) in" % ERROR_MARKER,
        data=[filename, video["video_ids"], cached_id])
    with tf.control_dependencies([check]):
      video.update({name: tf.identity(value) for name, value in teacher.items()})
    return video

  def input_batch(self, files, batch_size, training, teacher_cache=None, **kwargs):
    """Validates the files (and their cache shards), then returns (batch dict of tensors, iterator
    initializer op)."""
    counts = self.validate_files(files)
    if teacher_cache is not None:
      teacher_cache.check_shards(files, counts)
    iterator = tf.data.make_initializable_iterator(
        self.dataset(files, batch_size, training, teacher_cache=teacher_cache, **kwargs))
    return iterator.get_next(), iterator.initializer

  # -- parsing helpers -------------------------------------------------------------------------------
  def _context_features(self):
    return {"id": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "video_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "labels": tf.io.VarLenFeature(tf.int64)}

  def _ids_and_labels(self, filename, context):
    video_id = tf.where(tf.equal(context["id"], ""), context["video_id"], context["id"])
    label_ids = context["labels"].values
    check = tf.debugging.Assert(
        tf.reduce_all((label_ids >= 0) & (label_ids < self.num_classes)),
        ["%s label id outside [0, num_classes=%d) (expected ids 0..%d; a larger --num_classes if "
         "the data has more classes) in" % (ERROR_MARKER, self.num_classes, self.num_classes - 1),
         filename, video_id, label_ids], summarize=30)
    with tf.control_dependencies([check]):
      one_hot = tf.one_hot(label_ids, self.num_classes, dtype=tf.float32)
    labels = tf.minimum(tf.reduce_sum(one_hot, axis=0), 1.0)  # no ids (test split): all zeros
    return video_id, labels


class YT8MFrameFeatureReader(_BaseReader):
  """Frame-level SequenceExample reader; `k_frame` (with `frame_sampling`) makes it a student's reader."""

  frame_level = True

  def __init__(self, num_classes=3862, feature_names=("rgb", "audio"), feature_sizes=(1024, 128),
               max_frames=300, k_frame=None, frame_sampling="uniform", also_full_frames=False,
               seed=None, k_frame_choices=(), nested_stages=()):
    super(YT8MFrameFeatureReader, self).__init__(num_classes, feature_names, feature_sizes)
    self.max_frames = int(max_frames)
    if k_frame is not None and not 0 < int(k_frame) <= self.max_frames:
      raise InputError("--k_frame=%s: expected 1..max_frames (%d)" % (k_frame, self.max_frames))
    self.k_frame = (None if k_frame is None or (int(k_frame) == self.max_frames and frame_sampling != NESTED)
                    else int(k_frame))
    if frame_sampling not in FRAME_SAMPLING_METHODS + (NESTED,):
      raise InputError("--frame_sampling=%r: expected one of %s"
                       % (frame_sampling, ", ".join(FRAME_SAMPLING_METHODS)))
    self.frame_sampling = frame_sampling
    self.also_full_frames = also_full_frames
    self.seed = seed
    if any(not 0 < int(k) <= self.max_frames for k in k_frame_choices):
      raise InputError("--k_frame_choices=%s: expected 1..max_frames (%d)"
                       % (",".join(map(str, k_frame_choices)), self.max_frames))
    self.k_frame_choices = [int(k) for k in k_frame_choices]
    self.nested_stages = list(nested_stages)   # frame_sampling=NESTED: the stages (the last k_frame)

  def _check_record(self, path, record):
    example = tf.train.SequenceExample.FromString(record)
    where = "%s (video %s)" % (path, _video_id(example.context.feature))
    lists = example.feature_lists.feature_list
    for name, size in zip(self.feature_names, self.feature_sizes):
      if name not in lists:
        raise InputError("%s: frame feature %r not found (--feature_names); the record has %s"
                         % (where, name, sorted(lists.keys()) or "no frame features (video-level "
                            "data? use --frame_features=False)"))
      for number, frame in enumerate(lists[name].feature):
        found = frame.bytes_list.value[0] if len(frame.bytes_list.value) == 1 else None
        if found is None or len(found) != size:
          raise InputError("%s: frame feature %r has %s per frame, expected %d (--feature_sizes; "
                           "frame %d)" % (where, name, "no single byte string" if found is None
                                          else "%d bytes" % len(found), size, number))
    self._check_labels(where, example.context.feature)

  def _frames(self, filename, video_id, frame_strings, size, name, indices, count, length):
    """Gathers the chosen frames' bytes, then decodes and dequantizes only those: [len(indices), size]."""
    check = tf.debugging.assert_equal(
        tf.strings.length(frame_strings), size,
        message="%s frame feature '%s' has a frame whose byte length is not %d (--feature_sizes) in"
        % (ERROR_MARKER, name, size), data=[filename, video_id], summarize=3)
    # Index `length` (padding) points at an all-zero frame, so every chosen entry decodes in one op;
    # the mask then zeroes the padding after dequantization.
    with tf.control_dependencies([check]):
      padded = tf.concat([frame_strings[:length], [b"\0" * size]], axis=0)
    decoded = tf.reshape(tf.io.decode_raw(tf.gather(padded, indices), tf.uint8), [-1, size])
    mask = tf.cast(tf.range(tf.size(indices)) < count, tf.float32)[:, None]
    return utils.dequantize(decoded) * mask

  def _matrix(self, filename, video_id, sequence, length, k, method, training):
    key = (tf.strings.to_hash_bucket_fast(video_id, 2 ** 62) if method == "random" and not training
           else None)
    indices, count = sample_frame_indices(length, k, method, self.max_frames, self.seed, key,
                                          self.nested_stages or None)
    parts = [self._frames(filename, video_id, sequence[name], size, name, indices, count, length)
             for name, size in zip(self.feature_names, self.feature_sizes)]
    matrix = tf.concat(parts, axis=1)
    matrix.set_shape([sampled_frame_count(k, method, self.max_frames) if isinstance(k, int) else None,
                      sum(self.feature_sizes)])
    return matrix, count

  def parse_record(self, filename, serialized, training=False, k=None):
    """One video; outside training, random-k frames are a fixed function of the video id. `k` (an
    int32 scalar tensor, an any-k student's draw for the batch) replaces the reader's k_frame."""
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, example_name=filename, context_features=self._context_features(),
        sequence_features={name: tf.io.FixedLenSequenceFeature([], tf.string)
                           for name in self.feature_names})
    video_id, labels = self._ids_and_labels(filename, context)
    length = tf.minimum(tf.shape(sequence[self.feature_names[0]])[0], self.max_frames)
    for name in self.feature_names[1:]:
      length = tf.minimum(length, tf.shape(sequence[name])[0])
    if k is None and self.k_frame is None:
      matrix, count = self._matrix(filename, video_id, sequence, length, self.max_frames, "first", training)
    else:
      matrix, count = self._matrix(filename, video_id, sequence, length,
                                   self.k_frame if k is None else k, self.frame_sampling, training)
    output = {"video_ids": video_id, "video_matrix": matrix, "num_frames": count, "labels": labels}
    if self.also_full_frames:
      full, full_count = self._matrix(filename, video_id, sequence, length, self.max_frames, "first",
                                      training)
      output.update(full_video_matrix=full, full_num_frames=full_count)
    return output


class YT8MAggregatedFeatureReader(_BaseReader):
  """Video-level Example reader (`mean_rgb`, `mean_audio`): video_matrix [B, sum(feature_sizes)]."""

  frame_level = False

  def _check_record(self, path, record):
    features = tf.train.Example.FromString(record).features.feature
    where = "%s (video %s)" % (path, _video_id(features))
    for name, size in zip(self.feature_names, self.feature_sizes):
      if name not in features:
        raise InputError("%s: video feature %r not found (--feature_names); the record has %s"
                         % (where, name, sorted(k for k in features if k not in ("id", "video_id", "labels"))))
      values = features[name].float_list.value
      if len(values) != size:
        raise InputError("%s: video feature %r has %d values, expected %d (--feature_sizes)"
                         % (where, name, len(values), size))
    self._check_labels(where, features)

  def parse_record(self, filename, serialized, training=False):
    spec = self._context_features()
    for name, size in zip(self.feature_names, self.feature_sizes):
      spec[name] = tf.io.FixedLenFeature([size], tf.float32)
    features = tf.io.parse_single_example(serialized, spec, example_names=filename)
    video_id, labels = self._ids_and_labels(filename, features)
    matrix = tf.concat([features[name] for name in self.feature_names], axis=0)
    check = tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(matrix)),
        ["%s video features that are not finite numbers (NaN or infinity; expected finite %s) in"
         % (ERROR_MARKER, ", ".join(self.feature_names)), filename, video_id], summarize=3)
    with tf.control_dependencies([check]):
      matrix = tf.identity(matrix)
    return {"video_ids": video_id, "video_matrix": matrix, "num_frames": tf.constant(1, tf.int32),
            "labels": labels}


def _video_id(features):
  for key in ("id", "video_id"):
    if key in features and features[key].bytes_list.value:
      return features[key].bytes_list.value[0].decode("utf-8", "replace")
  return "?"


def explain_data_error(error, files, reader=None):
  """Turns a TF error raised while reading into an InputError naming the file, the video and what was
  expected (with `reader`, a record TF cannot parse is found by reading its file again); None if the
  error is not about the input data."""
  message = getattr(error, "message", str(error))
  if ERROR_MARKER in message:
    # Assertion text is "<marker> <what was expected> in] [<file>] [<video id>] [<values>...".
    line = next(l for l in message.splitlines() if ERROR_MARKER in l)
    parts = line.split(ERROR_MARKER, 1)[1].replace("\\'", "'").split("] [")
    what = parts[0].strip().rstrip("]")
    where = "%s (video %s%s)" % (parts[1].rstrip("]"), parts[2].rstrip("]") if len(parts) > 2 else "?",
                                 ", values %s" % parts[3].rstrip("]") if len(parts) > 3 else "")
    return InputError("%s %s" % (what, where))
  if isinstance(error, tf.errors.DataLossError):
    for path in files:
      try:
        for _ in tf.io.tf_record_iterator(path):
          pass
      except tf.errors.DataLossError as e:
        return InputError("%s is corrupt (%s): expected an intact TFRecord file"
                          % (path, e.message.splitlines()[0][:200]))
    return InputError("corrupt input record: %s" % utils.error_line(message))
  if isinstance(error, tf.errors.InvalidArgumentError) and ("parse" in message.lower()
                                                            or "Feature" in message):
    named = re.search(r"Name: (.+?), |example id: (\S+)", message)
    path = next((name for name in named.groups() if name in files), None) if named else None
    found = reader.find_bad_record(path) if reader is not None and path else None
    if found is not None:
      return found
    return InputError("%scannot parse an input record (check --feature_names/--feature_sizes/"
                      "--frame_features): %s" % (path + ": " if path else "", utils.error_line(message)))
  return None


def video_lengths(files, feature_name, limit=512):
  """Frame counts (the length of feature list `feature_name`) of up to `limit` frame-level videos, read
  from the start of the files in turn (a sample for the warnings before training)."""
  lengths = []
  for path in files:
    for record in tf.io.tf_record_iterator(path):
      example = tf.train.SequenceExample.FromString(record)
      lengths.append(len(example.feature_lists.feature_list[feature_name].feature))
      if len(lengths) >= limit:
        return lengths
  return lengths


def strided_padding_share(lengths, k, max_frames):
  """(share of `lengths` shorter than the last strided position + 1, that position): the videos whose
  strided-k student reads padding at some of its positions."""
  last = strided_positions(k, max_frames)[-1]
  short = sum(1 for n in lengths if min(n, max_frames) <= last)
  return (short / len(lengths) if lengths else 0.0), last


def run_on_input(sess, fetch, files, reader=None, feed_dict=None):
  """sess.run(fetch, feed_dict) where an error about the input data becomes the InputError that
  explain_data_error gives (naming the file, the video and what was expected); the end of the input
  (OutOfRangeError) and other errors propagate."""
  try:
    return sess.run(fetch, feed_dict)
  except tf.errors.OutOfRangeError:
    raise
  except tf.errors.OpError as error:
    explained = explain_data_error(error, files, reader)
    if explained is None:
      raise
    raise explained


def read_batches(sess, fetch, files, reader=None, feed_dict=None):
  """The one read loop of eval, inference and the cache writer: yields run_on_input(...) batch by
  batch until the input runs out."""
  while True:
    try:
      values = run_on_input(sess, fetch, files, reader, feed_dict)
    except tf.errors.OutOfRangeError:
      return
    yield values


def get_reader(frame_features, num_classes, feature_names, feature_sizes, max_frames=300,
               k_frame=None, frame_sampling="uniform", also_full_frames=False, seed=None,
               k_frame_choices=(), nested_stages=()):
  """The reader the flags ask for (frame level or video level); with `k_frame_choices` (an any-k
  student), each training batch reads a k drawn from them, evaluation reads `k_frame`;
  `nested_stages` go with frame_sampling=NESTED."""
  if frame_features:
    return YT8MFrameFeatureReader(num_classes, feature_names, feature_sizes, max_frames, k_frame,
                                  frame_sampling, also_full_frames, seed, k_frame_choices, nested_stages)
  return YT8MAggregatedFeatureReader(num_classes, feature_names, feature_sizes)
