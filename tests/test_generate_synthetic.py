"""The synthetic YouTube-8M generator: format, determinism, video-level means, label statistics, and that
the label evidence is temporal (all frames > k spread frames > the first k frames)."""

import hashlib
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import eval_util
import generate_synthetic_yt8m as gen
import readers
import utils
from helpers import run_batches

SIZES = {"train": 40, "validate": 12, "test": 6}


def _small(out_dir, seed=0, **kwargs):
  return gen.generate(str(out_dir), num_train=SIZES["train"], num_validate=SIZES["validate"],
                      num_test=SIZES["test"], num_classes=30, rgb_size=8, audio_size=4, max_frames=50,
                      shards_per_split=3, video_level=True, seed=seed, min_frames=5, verbose=False, **kwargs)


def _records(folder):
  return [r for name in sorted(os.listdir(folder)) for r in tf.compat.v1.io.tf_record_iterator(os.path.join(folder, name))]


def _parse(records, parse):
  """Runs `parse(serialized) -> dict of tensors` on each record (graph mode, as the test process is)."""
  with tf.Graph().as_default():
    serialized = tf.compat.v1.placeholder(tf.string, [])
    fetches = parse(serialized)
    with tf.compat.v1.Session() as session:
      return [session.run(fetches, {serialized: record}) for record in records]


def _parse_frames(records, with_labels=True):
  def parse(serialized):
    context_spec = {"id": tf.io.FixedLenFeature([], tf.string)}
    if with_labels:
      context_spec["labels"] = tf.io.VarLenFeature(tf.int64)
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=context_spec,
        sequence_features={name: tf.io.FixedLenSequenceFeature([], tf.string) for name in ("rgb", "audio")})
    out = {"id": context["id"], "rgb": tf.io.decode_raw(sequence["rgb"], tf.uint8),
           "audio": tf.io.decode_raw(sequence["audio"], tf.uint8)}
    if with_labels:
      out["labels"] = context["labels"].values
    return out
  return _parse(records, parse)


def _digest(folder, with_stats=False):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      if name.endswith(".tfrecord") or name == "vocabulary.csv":
        h.update(name.encode() + open(os.path.join(root, name), "rb").read())
  if with_stats:
    stats = json.load(open(os.path.join(folder, "stats.json")))
    stats.pop("timing"), stats.pop("videos_per_sec")
    h.update(json.dumps(stats, sort_keys=True).encode())
  return h.hexdigest()


def test_files_records_ids_labels_and_test_split(tmp_path):
  stats = _small(tmp_path)
  ids = []
  for split, count in SIZES.items():
    for level in ("frame", "video"):
      folder = str(tmp_path / level / split)
      assert sorted(os.listdir(folder)) == ["%s%04d.tfrecord" % (split, i) for i in range(3)]
    records = _records(str(tmp_path / "frame" / split))
    assert len(records) == count
    for record in records:   # the test split has no labels key at all, like the Kaggle test split
      assert ("labels" in tf.train.SequenceExample.FromString(record).context.feature) == (split != "test")
    for video in _parse_frames(records, with_labels=split != "test"):
      assert re.match(rb"^syn\d{7}$", video["id"])
      ids.append(video["id"])
      assert 5 <= len(video["rgb"]) == len(video["audio"]) <= 50
      assert video["rgb"].shape[1] == 8 and video["audio"].shape[1] == 4
      if split != "test":
        labels = list(video["labels"])
        assert labels and labels == sorted(set(labels)) and all(0 <= l < 30 for l in labels)
  assert len(set(ids)) == sum(SIZES.values()), "ids unique across splits"
  vocabulary = open(str(tmp_path / "vocabulary.csv")).read().splitlines()
  assert vocabulary[0] == ("Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl,Vertical1,Vertical2,Vertical3,"
                           "WikiDescription")
  assert len(vocabulary) == 31
  train_counts = np.zeros(30, int)
  for video in _parse_frames(_records(str(tmp_path / "frame" / "train"))):
    train_counts[video["labels"]] += 1
  assert [int(row.split(",")[1]) for row in vocabulary[1:]] == train_counts.tolist()
  assert all(row.split(",")[5].startswith("Vertical ") for row in vocabulary[1:])
  assert not [n for _, _, files in os.walk(str(tmp_path)) for n in files if ".tmp" in n], "no temporary files left"
  assert stats["videos"] == 58 and stats["videos_per_sec"] > 0 and stats["parameters"]["seed"] == 0
  assert json.load(open(str(tmp_path / "stats.json")))["videos"] == 58


def test_video_level_means_are_means_of_dequantized_frames(tmp_path):
  _small(tmp_path)
  for split in SIZES:
    frames = {v["id"]: utils.dequantize_np(np.concatenate([v["rgb"], v["audio"]], axis=1)).mean(axis=0)
              for v in _parse_frames(_records(str(tmp_path / "frame" / split)), with_labels=False)}

    def parse(serialized):
      return tf.io.parse_single_example(serialized, {
          "id": tf.io.FixedLenFeature([], tf.string), "mean_rgb": tf.io.FixedLenFeature([8], tf.float32),
          "mean_audio": tf.io.FixedLenFeature([4], tf.float32)})
    records = _records(str(tmp_path / "video" / split))
    videos = _parse(records, parse)
    assert sorted(v["id"] for v in videos) == sorted(frames)
    for video, record in zip(videos, records):
      np.testing.assert_allclose(np.concatenate([video["mean_rgb"], video["mean_audio"]]), frames[video["id"]],
                                 atol=1e-5)
      assert ("labels" in tf.train.Example.FromString(record).features.feature) == (split != "test")


def test_readers_accept_the_generated_shards(tmp_path):
  _small(tmp_path)
  reader = readers.YT8MFrameFeatureReader(30, ["rgb", "audio"], [8, 4], max_frames=50)
  frame_files = readers.resolve_files(str(tmp_path / "frame" / "validate" / "*.tfrecord"))
  assert sum(reader.validate_files(frame_files)) == SIZES["validate"]
  with tf.Graph().as_default():
    batches = run_batches(*reader.input_batch(frame_files, 4, training=False, num_readers=1))
  assert sum(len(b["video_ids"]) for b in batches) == SIZES["validate"]
  assert all(b["labels"].sum(axis=1).min() >= 1 for b in batches), "every validation video has a label"
  assert all(1 <= n <= 50 for b in batches for n in b["num_frames"])
  video = readers.YT8MAggregatedFeatureReader(30, ["mean_rgb", "mean_audio"], [8, 4])
  video_files = readers.resolve_files(str(tmp_path / "video" / "validate" / "*.tfrecord"))
  assert sum(video.validate_files(video_files)) == SIZES["validate"]


def test_deterministic_by_seed_and_cli(tmp_path):
  _small(tmp_path / "a", seed=1)
  _small(tmp_path / "b", seed=1)
  _small(tmp_path / "c", seed=2)
  assert _digest(str(tmp_path / "a"), True) == _digest(str(tmp_path / "b"), True)
  assert _digest(str(tmp_path / "a")) != _digest(str(tmp_path / "c"))
  gen.main(["--out_dir=%s" % (tmp_path / "d"), "--num_train=40", "--num_validate=12", "--num_test=6",
            "--num_classes=30", "--rgb_size=8", "--audio_size=4", "--max_frames=50", "--min_frames=5",
            "--shards_per_split=3", "--video_level", "--seed=1"])
  assert _digest(str(tmp_path / "d"), True) == _digest(str(tmp_path / "a"), True), "CLI == API"
  # A smaller rerun into the same folder leaves no stale shard behind.
  gen.generate(str(tmp_path / "a"), num_train=5, num_validate=0, num_test=0, num_classes=30, rgb_size=8,
               audio_size=4, max_frames=50, shards_per_split=2, seed=1, verbose=False)
  assert sorted(os.listdir(str(tmp_path / "a" / "frame" / "train"))) == ["train0000.tfrecord", "train0001.tfrecord"]


@pytest.mark.slow
def test_statistics_are_yt8m_like(tmp_path):
  stats = gen.generate(str(tmp_path), num_train=3000, num_validate=0, num_test=0, num_classes=500,
                       rgb_size=8, audio_size=4, max_frames=300, shards_per_split=1, verbose=False)
  labels = stats["labels_per_video"]
  assert 2.5 <= labels["mean"] <= 3.5 and labels["median"] in (2, 3) and labels["max"] <= 19
  real = [24.7, 22.5, 18.6, 15.6, 8.8, 4.6, 2.5, 1.3]
  assert np.max(np.abs(np.subtract(labels["percent_with_1_to_8"], real))) < 3.0
  assert 0.1 <= stats["top_class_video_share"] <= 0.35
  assert 0.5 <= stats["pairs_sharing_vertical"] <= 0.85
  assert -1.5 <= stats["rank_frequency_slope"] <= -0.7
  assert stats["label_share_top10"] > 0.2
  assert stats["frames"]["max"] == 300 and stats["frames"]["min"] >= 20 and 150 <= stats["frames"]["mean"] <= 230
  annotation = stats["annotation"]
  assert 0.08 <= annotation["true_topics_unannotated_fraction"] <= 0.25
  assert 0.01 <= annotation["annotated_without_evidence_fraction"] <= 0.1
  assert 0.15 <= annotation["evidence_frame_fraction_per_topic_mean"] <= 0.7, "evidence is in segments only"


def test_feature_values_are_yt8m_like_at_real_dims(tmp_path):
  """At 1024+128 dims (the evidence is a fixed norm, so at tiny dims it dominates each value)."""
  stats = gen.generate(str(tmp_path), num_train=120, num_validate=0, num_test=0, shards_per_split=1,
                       verbose=False)
  rgb, audio = stats["features"]["rgb"], stats["features"]["audio"]
  assert 0.42 <= rgb["video_mean_std"] <= 0.50, rgb                     # real mean_rgb: 0.46
  assert 0.62 <= audio["video_mean_std"] <= 0.75, audio                 # real mean_audio: 0.69
  assert rgb["frame_value_min"] >= -2 and rgb["frame_value_max"] <= 2.01 and rgb["frame_value_clipped_fraction"] < 0.02
  assert rgb["frame_value_std"] > rgb["video_mean_std"], "frames are noisier than their mean"


def _ridge_gap(train, validate, lam=10.0):
  (x, y), (x_val, y_val) = train, validate
  mean = x.mean(axis=0)
  a = np.c_[x - mean, np.ones(len(x))]
  w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y)
  return eval_util.calculate_gap(np.c_[x_val - mean, np.ones(len(x_val))] @ w, y_val)


def test_evidence_is_temporal():
  """A linear model on the mean of all frames beats the mean of 6 frames spread over the video, which
  beats the first 6 frames: topics are present in segments, not in every frame."""
  classes = 40
  world = gen.World(classes, 5, 32, 8, seed=0)
  data = {}
  for split, count in ((0, 1500), (1, 500)):
    x = {"all": [], "uniform6": [], "first6": []}
    y = np.zeros((count, classes))
    for i, (labels, _, _, quantized, _) in enumerate(gen.iter_videos(
        world, split, count, 0, 20, 300, 0.85, 0.15, 0.05, 1.0)):
      y[i, labels] = 1
      frames = utils.dequantize_np(quantized)
      x["all"].append(frames.mean(0))
      x["uniform6"].append(frames[np.arange(6) * len(frames) // 6].mean(0))
      x["first6"].append(frames[:6].mean(0))
    data[split] = {k: (np.array(v), y) for k, v in x.items()}
  gap = {k: _ridge_gap(data[0][k], data[1][k]) for k in data[0]}
  assert gap["all"] > gap["uniform6"] + 0.015 and gap["uniform6"] > gap["first6"] + 0.1, gap   # ~.65/.62/.37
