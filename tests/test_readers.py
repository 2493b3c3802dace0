"""Readers: values, padding, k-frame sampling against a NumPy reference, real shards, bad input."""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import readers
import utils
from helpers import (frame_record, video_record, write_records, make_frame_videos, run_batches,
                      real_data_path)
from utils import InputError


def reference_indices(n, k, method, max_frames):
  """Independent statement of the sampling rules (see readers.sample_frame_indices)."""
  if method == "strided":   # the seed's 0:max_frames:max_frames//k, possibly more than k positions
    step = max(max_frames // k, 1)
    return [p for p in range(0, max_frames, step) if p < n]
  if n <= k:
    return list(range(n))
  if method == "uniform":
    return [int(np.floor(i * n / k)) for i in range(k)]
  if method == "first":
    return list(range(k))
  if method == "last":
    return list(range(n - k, n))
  if method == "middle":
    start = (n - k) // 2
    return list(range(start, start + k))
  if method == "first_middle_last":
    b = c = k // 3
    a = k - b - c
    start = min(max((n - b) // 2, a), n - c - b)
    return list(range(a)) + list(range(start, start + b)) + list(range(n - c, n))
  raise ValueError(method)


@pytest.mark.parametrize("method", [m for m in readers.FRAME_SAMPLING_METHODS if m != "random"])
def test_sampling_matches_reference(method):
  cases = [(n, k) for k in (1, 3, 6, 10, 30) for n in (0, 1, 2, 5, 6, 7, 29, 30, 31, 100, 299, 300)]
  with tf.Graph().as_default():
    n_ph = tf.placeholder(tf.int32, [])
    ops = {k: readers.sample_frame_indices(n_ph, k, method, 300) for k in (1, 3, 6, 10, 30)}
    with tf.Session() as sess:
      for n, k in cases:
        indices, count = sess.run(ops[k], {n_ph: n})
        expected = reference_indices(n, k, method, 300)
        assert count == len(expected), (method, n, k)
        assert indices[:count].tolist() == expected, (method, n, k)
        assert (indices[count:] == n).all(), "padding entries point past the video"
        assert len(set(expected)) == len(expected), "no frame is taken twice"


def test_random_sampling_distinct_sorted_and_fresh():
  with tf.Graph().as_default():
    n_ph = tf.placeholder(tf.int32, [])
    indices, count = readers.sample_frame_indices(n_ph, 6, "random", 300)
    with tf.Session() as sess:
      draws = [sess.run([indices, count], {n_ph: 50}) for _ in range(20)]
      short, short_count = sess.run([indices, count], {n_ph: 4})
  for idx, c in draws:
    assert c == 6 and len(set(idx)) == 6 and list(idx) == sorted(idx) and idx.max() < 50
  assert len({tuple(idx) for idx, _ in draws}) > 10, "random frames must change from read to read"
  assert short_count == 4 and short[:4].tolist() == [0, 1, 2, 3]


def test_unknown_sampling_method():
  with pytest.raises(InputError, match="frame_sampling"):
    readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4], k_frame=6, frame_sampling="every")


def _read_all(reader, pattern, batch_size=3, training=False, **kwargs):
  with tf.Graph().as_default():
    batch, init = reader.input_batch(readers.resolve_files(pattern), batch_size, training, **kwargs)
    return run_batches(batch, init)


def _concat(batches, key):
  return np.concatenate([b[key] for b in batches])


def test_frame_reader_all_frames(tmp_path):
  videos = make_frame_videos(7, num_classes=10, max_frames=40)
  write_records(str(tmp_path / "a.tfrecord"), [frame_record(*v) for v in videos[:4]])
  write_records(str(tmp_path / "b.tfrecord"), [frame_record(*v) for v in videos[4:]])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4], max_frames=30)
  batches = _read_all(reader, str(tmp_path / "*.tfrecord"))
  ids = [i.decode() for i in _concat(batches, "video_ids")]
  assert sorted(ids) == sorted(v[0] for v in videos), "evaluation reads every video exactly once"
  assert [len(b["video_ids"]) for b in batches] == [3, 3, 1], "last partial batch kept"
  matrices, counts, labels = (_concat(batches, k) for k in ("video_matrix", "num_frames", "labels"))
  assert matrices.shape == (7, 30, 12) and labels.shape == (7, 10)
  for row, vid in enumerate(ids):
    _, vlabels, feats = videos[int(vid[1:])]
    n = min(len(feats["rgb"]), 30)
    assert counts[row] == n
    expected = utils.dequantize_np(np.concatenate([feats["rgb"], feats["audio"]], 1)[:n])
    np.testing.assert_allclose(matrices[row, :n], expected, atol=1e-6)
    assert not matrices[row, n:].any(), "zero padding after the last frame"
    assert np.flatnonzero(labels[row]).tolist() == vlabels


@pytest.mark.parametrize("method", ["uniform", "first_middle_last", "strided", "last"])
def test_student_reader_takes_the_reference_frames(tmp_path, method):
  videos = make_frame_videos(6, num_classes=10, min_frames=2, max_frames=60, seed=3)
  path = write_records(str(tmp_path / "s.tfrecord"), [frame_record(*v) for v in videos])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4], max_frames=50, k_frame=6,
                                          frame_sampling=method, also_full_frames=True)
  batches = _read_all(reader, path, batch_size=4)
  for b in batches:
    for row, vid in enumerate(b["video_ids"]):
      feats = videos[int(vid.decode()[1:])][2]
      n = min(len(feats["rgb"]), 50)
      idx = reference_indices(n, 6, method, 50)
      frames = utils.dequantize_np(np.concatenate([feats["rgb"], feats["audio"]], 1))
      assert b["num_frames"][row] == len(idx)
      np.testing.assert_allclose(b["video_matrix"][row, :len(idx)], frames[idx], atol=1e-6)
      assert not b["video_matrix"][row, len(idx):].any()
      assert b["full_num_frames"][row] == n and b["full_video_matrix"].shape[1] == 50


def test_random_k_is_fixed_per_video_outside_training(tmp_path):
  """Evaluation and inference of a random-k student see the same frames on every pass (keyed by the
  video id, whatever the file order); training draws afresh each epoch."""
  videos = make_frame_videos(8, num_classes=10, min_frames=20, max_frames=60, seed=5)
  write_records(str(tmp_path / "a.tfrecord"), [frame_record(*v) for v in videos])
  write_records(str(tmp_path / "b.tfrecord"), [frame_record(*v) for v in reversed(videos)])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4], max_frames=60, k_frame=6,
                                          frame_sampling="random")
  def frames_by_video(pattern, **kwargs):
    batches = _read_all(reader, pattern, batch_size=3, **kwargs)
    return [dict(zip([i.decode() for i in b["video_ids"]], b["video_matrix"])) for b in batches]
  first, again = frames_by_video(str(tmp_path / "a.tfrecord")), frames_by_video(str(tmp_path / "b.tfrecord"))
  first, again = ({k: v for d in x for k, v in d.items()} for x in (first, again))
  assert first.keys() == again.keys() and len(first) == 8
  for video_id, matrix in first.items():
    np.testing.assert_array_equal(matrix, again[video_id])
    feats = videos[int(video_id[1:])][2]
    frames = utils.dequantize_np(np.concatenate([feats["rgb"], feats["audio"]], 1))
    rows = [int(np.flatnonzero((np.abs(frames - row) < 1e-6).all(1))[0]) for row in matrix]
    assert rows == sorted(set(rows)) and len(rows) == 6, "6 distinct frames of the video, in time order"
  draws = frames_by_video(str(tmp_path / "a.tfrecord"), training=True, num_epochs=4, seed=2)
  per_video = {}
  for batch in draws:
    for video_id, matrix in batch.items():
      per_video.setdefault(video_id, []).append(matrix.tobytes())
  assert sum(len(set(m)) > 1 for m in per_video.values()) >= 6, "training draws fresh frames per epoch"


def test_training_mode_repeats_and_shuffles(tmp_path):
  videos = make_frame_videos(12, num_classes=10)
  path = write_records(str(tmp_path / "t.tfrecord"), [frame_record(*v) for v in videos])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4], max_frames=30)
  batches = _read_all(reader, path, batch_size=4, training=True, num_epochs=2, seed=1)
  ids = [i.decode() for i in _concat(batches, "video_ids")]
  assert len(ids) == 24 and all(ids.count(v[0]) == 2 for v in videos)
  assert ids[:12] != sorted(ids[:12]), "training order is shuffled"


def test_2017_key_and_missing_labels(tmp_path):
  rng = np.random.RandomState(0)
  frames = {"rgb": rng.randint(0, 256, (3, 8)), "audio": rng.randint(0, 256, (3, 4))}
  path = write_records(str(tmp_path / "x.tfrecord"), [
      frame_record("old", [1, 2], frames, id_key="video_id"), frame_record("test", None, frames)])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4], max_frames=30)
  (batch,) = _read_all(reader, path)
  assert batch["video_ids"].tolist() == [b"old", b"test"]
  assert batch["labels"][0].tolist() == [0, 1, 1] + [0] * 7 and not batch["labels"][1].any()


def test_segment_fields_are_accepted(tmp_path):
  example = tf.train.SequenceExample.FromString(frame_record("seg", [4], {
      "rgb": np.zeros((2, 8)), "audio": np.zeros((2, 4))}))
  context = example.context.feature
  context["segment_labels"].int64_list.value.extend([4])
  context["segment_start_times"].int64_list.value.extend([0])
  context["segment_scores"].float_list.value.extend([1.0])
  path = write_records(str(tmp_path / "seg.tfrecord"), [example.SerializeToString()])
  (batch,) = _read_all(readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4]), path)
  assert batch["video_ids"].tolist() == [b"seg"] and batch["labels"][0, 4] == 1


def test_real_2018_video_level_shards():
  folder = real_data_path("yt8m-2018-video-level")
  reader = readers.YT8MAggregatedFeatureReader(3862, ["mean_rgb", "mean_audio"], [1024, 128])
  batches = _read_all(reader, os.path.join(folder, "validate*.tfrecord"), batch_size=1024)
  ids = _concat(batches, "video_ids")
  labels = _concat(batches, "labels")
  assert len(ids) == 8908 and len(set(ids.tolist())) == 8908
  assert _concat(batches, "video_matrix").shape == (8908, 1152)
  assert 2.8 < labels.sum(1).mean() < 3.2 and labels.sum(1).min() >= 1


def test_real_2017_validate_and_test_shards():
  folder = real_data_path("yt8m-2017-video-level")
  reader = readers.YT8MAggregatedFeatureReader(4716, ["mean_rgb", "mean_audio"], [1024, 128])
  (val,) = _read_all(reader, os.path.join(folder, "validatea0.tfrecord"), batch_size=1000)
  (test,) = _read_all(reader, os.path.join(folder, "testa0.tfrecord"), batch_size=1000)
  assert len(val["video_ids"]) == 368 and val["labels"].sum(1).min() >= 1
  assert len(test["video_ids"]) == 163 and not test["labels"].any(), "test split has no labels"
  assert all(len(i) > 0 for i in test["video_ids"])
  as_2018 = readers.YT8MAggregatedFeatureReader(3862, ["mean_rgb", "mean_audio"], [1024, 128])
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:  # 2017 labels go up to 4715
    _read_all(as_2018, os.path.join(folder, "validatea0.tfrecord"), batch_size=1000)
  assert "num_classes=3862" in str(readers.explain_data_error(raised.value, []))


# -- bad input ---------------------------------------------------------------------------------------
def _good_shard(tmp_path, name="good.tfrecord", n=4):
  return write_records(str(tmp_path / name), [frame_record(*v) for v in make_frame_videos(n)])


def test_pattern_matching_no_file(tmp_path):
  with pytest.raises(InputError, match=r"--train_data_pattern=.*nothing\*.*matches no file"):
    readers.resolve_files(str(tmp_path / "nothing*"), "--train_data_pattern")


def test_only_empty_shards(tmp_path):
  empty = [str(tmp_path / name) for name in ("e0.tfrecord", "e1.tfrecord")]
  for path in empty:
    open(path, "wb").close()
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4])
  with pytest.raises(InputError, match="e0.tfrecord, .*e1.tfrecord: the files hold no record"):
    reader.validate_files(empty)
  reader.validate_files(empty + [_good_shard(tmp_path)])  # an empty shard among others is fine


def test_truncated_shard(tmp_path):
  path = _good_shard(tmp_path)
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) - 50])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4])
  with pytest.raises(InputError, match="good.tfrecord is truncated"):
    reader.validate_files([path])


def test_corrupt_shard_named_when_read(tmp_path):
  path = _good_shard(tmp_path)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF  # a flipped byte inside a record: framing intact, CRC wrong
  open(path, "wb").write(bytes(data))
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4])
  with pytest.raises(tf.errors.DataLossError) as raised:
    _read_all(reader, path)
  error = readers.explain_data_error(raised.value, [_good_shard(tmp_path, "other.tfrecord"), path])
  assert isinstance(error, InputError) and "good.tfrecord is corrupt" in str(error)
  assert "\n" not in str(error)


def test_wrong_frame_byte_length(tmp_path):
  videos = make_frame_videos(3)
  bad = dict(videos[2][2], rgb=[b"\x01" * 7] * 3)
  path = write_records(str(tmp_path / "len.tfrecord"),
                       [frame_record(*v) for v in videos[:2]] + [frame_record("bad", [1], bad)])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4])
  with pytest.raises(InputError, match="'rgb' has 7 bytes per frame, expected 8"):
    reader._check_record(path, frame_record("bad", [1], bad))
  # A bad frame deeper in the file than the start-up check looks is caught while reading.
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    _read_all(reader, path)
  error = readers.explain_data_error(raised.value, [path])
  assert "frame feature 'rgb'" in str(error) and "len.tfrecord" in str(error)


def test_label_id_out_of_range(tmp_path):
  path = write_records(str(tmp_path / "lab.tfrecord"), [frame_record(*v) for v in make_frame_videos(3)]
                       + [frame_record("big", [10], {"rgb": np.zeros((2, 8)), "audio": np.zeros((2, 4))})])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4])
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    _read_all(reader, path)
  error = readers.explain_data_error(raised.value, [path])
  assert "num_classes=10" in str(error) and "lab.tfrecord" in str(error)
  small = readers.YT8MFrameFeatureReader(2, ["rgb", "audio"], [8, 4])
  with pytest.raises(InputError, match="lab.tfrecord .video v0000.: label id .* outside \\[0, 2\\)"):
    small.validate_files([path])


def test_unknown_feature_name(tmp_path):
  path = _good_shard(tmp_path)
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "sound"], [8, 4])
  with pytest.raises(InputError, match="frame feature 'sound' not found .*'audio', 'rgb'"):
    reader.validate_files([path])
  video = readers.YT8MAggregatedFeatureReader(10, ["mean_rgb"], [8])
  with pytest.raises(InputError, match="video feature 'mean_rgb' not found"):
    video.validate_files([write_records(str(tmp_path / "v.tfrecord"),
                                        [video_record("a", [1], {"mean_audio": np.zeros(4)})])])
