"""The synthetic YouTube-8M generator: format, determinism, video-level means, label statistics."""

import hashlib
import os

import numpy as np
import tensorflow.compat.v1 as tf

import generate_synthetic_yt8m as gen
import readers
import utils


def _digest(folder):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      if name.endswith(".tfrecord"):
        h.update(open(os.path.join(root, name), "rb").read())
  return h.hexdigest()


def _small(out_dir, seed=0, **kwargs):
  return gen.generate(str(out_dir), num_train=40, num_validate=12, num_test=6, num_classes=30,
                      rgb_size=8, audio_size=4, max_frames=50, shards_per_split=3, video_level=True,
                      seed=seed, min_frames=5, **kwargs)


def test_files_records_and_test_split(tmp_path):
  stats = _small(tmp_path)
  for split, count in (("train", 40), ("validate", 12), ("test", 6)):
    files = sorted(os.listdir(str(tmp_path / "frame" / split)))
    assert files == ["%s%04d.tfrecord" % (split, i) for i in range(3)]
    records = [r for f in files for r in tf.io.tf_record_iterator(str(tmp_path / "frame" / split / f))]
    assert len(records) == count
    for record in records:
      example = tf.train.SequenceExample.FromString(record)
      context = example.context.feature
      assert ("labels" in context) == (split != "test")
      labels = list(context["labels"].int64_list.value)
      assert labels == sorted(set(labels)) and all(0 <= l < 30 for l in labels)
      rgb = example.feature_lists.feature_list["rgb"].feature
      audio = example.feature_lists.feature_list["audio"].feature
      assert 5 <= len(rgb) == len(audio) <= 50
      assert all(len(f.bytes_list.value[0]) == 8 for f in rgb)
      assert all(len(f.bytes_list.value[0]) == 4 for f in audio)
  ids = [tf.train.SequenceExample.FromString(r).context.feature["id"].bytes_list.value[0]
         for s in ("train", "validate", "test") for f in os.listdir(str(tmp_path / "frame" / s))
         for r in tf.io.tf_record_iterator(str(tmp_path / "frame" / s / f))]
  assert len(set(ids)) == 58, "ids unique across splits"
  vocabulary = open(str(tmp_path / "vocabulary.csv")).read().splitlines()
  assert vocabulary[0].startswith("Index,TrainVideoCount,KnowledgeGraphId,Name") and len(vocabulary) == 31
  assert stats["videos"] == 58 and stats["videos_per_sec"] > 0


def test_readers_accept_the_generated_shards(tmp_path):
  _small(tmp_path)
  reader = readers.YT8MFrameFeatureReader(30, ["rgb", "audio"], [8, 4], max_frames=50)
  files = readers.resolve_files(str(tmp_path / "frame" / "validate" / "*.tfrecord"))
  reader.validate_files(files)
  video = readers.YT8MAggregatedFeatureReader(30, ["mean_rgb", "mean_audio"], [8, 4])
  video.validate_files(readers.resolve_files(str(tmp_path / "video" / "validate" / "*.tfrecord")))


def test_deterministic_by_seed(tmp_path):
  _small(tmp_path / "a", seed=1)
  _small(tmp_path / "b", seed=1)
  _small(tmp_path / "c", seed=2)
  assert _digest(str(tmp_path / "a")) == _digest(str(tmp_path / "b"))
  assert _digest(str(tmp_path / "a")) != _digest(str(tmp_path / "c"))


def test_video_level_means_are_means_of_dequantized_frames(tmp_path):
  _small(tmp_path)
  frames = {}
  for record in tf.io.tf_record_iterator(str(tmp_path / "frame" / "train" / "train0000.tfrecord")):
    example = tf.train.SequenceExample.FromString(record)
    lists = example.feature_lists.feature_list
    q = np.concatenate([np.array([np.frombuffer(f.bytes_list.value[0], np.uint8) for f in lists[name].feature])
                        for name in ("rgb", "audio")], axis=1)
    frames[example.context.feature["id"].bytes_list.value[0]] = utils.dequantize_np(q).mean(0)
  for record in tf.io.tf_record_iterator(str(tmp_path / "video" / "train" / "train0000.tfrecord")):
    feature = tf.train.Example.FromString(record).features.feature
    expected = frames[feature["id"].bytes_list.value[0]]
    got = np.concatenate([feature["mean_rgb"].float_list.value, feature["mean_audio"].float_list.value])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_statistics_are_yt8m_like(tmp_path):
  stats = gen.generate(str(tmp_path), num_train=3000, num_validate=0, num_test=0, num_classes=500,
                       rgb_size=8, audio_size=4, max_frames=300, shards_per_split=1)
  assert 2.5 <= stats["labels_per_video"]["mean"] <= 3.5
  assert 0.1 <= stats["top_class_video_share"] <= 0.35
  assert 0.5 <= stats["pairs_sharing_vertical"] <= 0.85
  assert 0.3 <= stats["rgb_value_std"] <= 0.6
  assert stats["frames"]["max"] == 300 and stats["frames"]["min"] >= 20
