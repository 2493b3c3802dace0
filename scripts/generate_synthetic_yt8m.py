"""Writes a synthetic data set in the real YouTube-8M format (frame-level SequenceExample shards, and
video-level Example shards on request) for train / validate / test, deterministic by seed.

The generative model, and why (REFERENCE §5 gives the real statistics it is matched to):
* Labels. Class popularity is Zipf-like, p(rank r) ∝ (r + 2)^-1.13, which at 3862 classes puts ~30% of
  labels on the top 10 classes, ~62% on the top 100 and the top class on ~20% of videos (real: 29.1%,
  61.5%, 20%). Labels per video follow the real histogram (24.7/22.5/18.6/15.6/8.8/4.6/2.5/1.3% for
  1..8, a thin tail to 19). Classes belong to verticals (as in vocabulary.csv); a video has a main
  vertical and draws each label from it with probability `vertical_affinity`, else from all classes,
  popularity-weighted, so that about 2/3 of label pairs share a vertical (real: 68.7%).
* Annotation noise. Each true topic is left unannotated with probability `missing_rate` (YouTube-8M
  labels come from metadata and miss topics); each annotated label has no visual/audio evidence with
  probability `noisy_rate`.
* Features. Each class has a direction in rgb space and one in audio space; classes of one vertical
  share part of their direction (related topics look alike). A frame is a per-video style vector
  (channel, camera, recording conditions) plus temporally smooth noise plus, for every topic present,
  its direction at a per-video strength — but only inside 1-3 segments of 5-40% of the video at
  random positions: in real videos a topic is on screen for parts of the video (the 2019 release
  labels 5-second segments for this reason). Values are clipped to [-2, 2] and quantized with the
  real 8-bit quantizer; rgb has std ≈ 0.46 like real mean_rgb values.
* Lengths. One frame per second, log-normal around 3-4 minutes, at least 20 frames, capped at
  `max_frames` (300), like YouTube-8M's 120-500 s videos.
Consequences that are not tuned for: a model that sees every frame can average the evidence of each
segment; k sampled frames may miss a short segment; the first k frames see only the start.

  python scripts/generate_synthetic_yt8m.py --out_dir=/tmp/yt8m --num_train=5000 --num_validate=1000
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

import utils  # noqa: E402

LABEL_COUNT_PERCENT = [24.7, 22.5, 18.6, 15.6, 8.8, 4.6, 2.5, 1.3] + [1.4 / 11] * 11  # 1..19 labels
ZIPF_OFFSET, ZIPF_EXPONENT = 2.0, 1.13


class World(object):
  """Classes, verticals, popularity and feature directions: shared by every split."""

  def __init__(self, num_classes, num_verticals, rgb_size, audio_size, seed):
    rng = np.random.RandomState(seed)
    self.num_classes = num_classes
    popularity = (np.arange(1, num_classes + 1) + ZIPF_OFFSET) ** -ZIPF_EXPONENT
    self.popularity = popularity / popularity.sum()        # class id = popularity rank
    vertical_sizes = rng.dirichlet(np.full(num_verticals, 2.0))
    self.vertical = rng.choice(num_verticals, num_classes, p=vertical_sizes)
    self.vertical[:num_verticals] = np.arange(num_verticals)  # every vertical has a class
    self.num_verticals = num_verticals
    vertical_mass = np.bincount(self.vertical, weights=self.popularity, minlength=num_verticals)
    self.vertical_probability = vertical_mass / vertical_mass.sum()
    self.directions = []
    for size in (rgb_size, audio_size):
      shared = rng.randn(num_verticals, size)
      own = rng.randn(num_classes, size)
      direction = 0.5 * shared[self.vertical] + 0.87 * own
      self.directions.append(direction / np.linalg.norm(direction, axis=1, keepdims=True))


def draw_labels(world, rng, vertical_affinity):
  """(sorted label ids, main vertical) of one video."""
  count = min(rng.choice(len(LABEL_COUNT_PERCENT), p=np.array(LABEL_COUNT_PERCENT) / sum(LABEL_COUNT_PERCENT)) + 1,
              world.num_classes)
  main = rng.choice(world.num_verticals, p=world.vertical_probability)
  in_main = world.popularity * (world.vertical == main)
  labels = set()
  while len(labels) < count:
    weights = in_main if rng.rand() < vertical_affinity else world.popularity
    weights = weights.copy()
    weights[list(labels)] = 0
    if weights.sum() <= 0:
      weights = world.popularity.copy()
      weights[list(labels)] = 0
    labels.add(int(rng.choice(world.num_classes, p=weights / weights.sum())))
  return sorted(labels)


def video_frames(world, rng, topics, num_frames, evidence_strength):
  """Quantized frames [num_frames, rgb+audio] of a video showing `topics` in segments."""
  parts = []
  for index, (directions, style_std, noise_std) in enumerate(
      ((world.directions[0], 0.25, 0.38), (world.directions[1], 0.3, 0.45))):
    size = directions.shape[1]
    style = rng.randn(size) * style_std
    # Temporally smooth noise: a 4-frame moving average of white noise, rescaled to noise_std.
    white = rng.randn(num_frames + 3, size)
    smooth = (np.cumsum(white, axis=0)[3:] - np.concatenate([np.zeros((1, size)), np.cumsum(white, axis=0)[:-4]]))
    frames = style + smooth * (noise_std / 2.0)
    for topic in topics:
      presence = np.zeros(num_frames)
      for _ in range(rng.randint(1, 4)):
        length = max(1, int(num_frames * rng.uniform(0.05, 0.4)))
        start = rng.randint(0, num_frames - length + 1)
        presence[start:start + length] = 1.0
      strength = evidence_strength * rng.uniform(0.6, 1.4) * (1.0 if index == 0 else 0.7)
      frames += strength * presence[:, None] * directions[topic] * np.sqrt(size) * 0.05
    parts.append(frames)
  return utils.quantize(np.concatenate(parts, axis=1))


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def frame_example(video_id, labels, quantized, rgb_size):
  example = tf.train.SequenceExample()
  example.context.feature["id"].bytes_list.value.append(video_id.encode())
  if labels is not None:
    example.context.feature["labels"].int64_list.value.extend(labels)
  lists = example.feature_lists.feature_list
  for name, block in (("rgb", quantized[:, :rgb_size]), ("audio", quantized[:, rgb_size:])):
    feature_list = lists[name]
    for row in block:
      feature_list.feature.add().bytes_list.value.append(row.tobytes())
  return example.SerializeToString()


def video_example(video_id, labels, quantized, rgb_size):
  means = utils.dequantize_np(quantized).mean(axis=0)
  example = tf.train.Example()
  feature = example.features.feature
  feature["id"].bytes_list.value.append(video_id.encode())
  if labels is not None:
    feature["labels"].int64_list.value.extend(labels)
  feature["mean_rgb"].float_list.value.extend(means[:rgb_size].tolist())
  feature["mean_audio"].float_list.value.extend(means[rgb_size:].tolist())
  return example.SerializeToString()


def _write_atomic(path, records):
  tmp = path + ".tmp"
  with tf.io.TFRecordWriter(tmp) as writer:
    for record in records:
      writer.write(record)
  os.replace(tmp, path)


def label_statistics(all_labels, world):
  counts = np.array([len(l) for l in all_labels])
  frequency = np.bincount(np.concatenate(all_labels).astype(np.int64), minlength=world.num_classes)
  ranked = np.sort(frequency)[::-1]
  total = ranked.sum()
  same, pairs = 0, 0
  for labels in all_labels:
    v = world.vertical[labels]
    pairs += len(v) * (len(v) - 1) // 2
    same += sum(int(np.sum(v[i] == v[i + 1:])) for i in range(len(v)))
  mid = np.arange(len(ranked))[(np.arange(len(ranked)) >= 9) & (ranked > 0)]
  mid = mid[mid < max(10, int(0.26 * len(ranked)))]
  slope = float(np.polyfit(np.log(mid + 1), np.log(ranked[mid]), 1)[0]) if len(mid) > 2 else None
  return {"labels_per_video": {"mean": float(counts.mean()), "median": float(np.median(counts)),
                               "p90": float(np.percentile(counts, 90)), "max": int(counts.max()),
                               "percent_with_1_to_8": [round(100 * float(np.mean(counts == n)), 1)
                                                       for n in range(1, 9)]},
          "classes_occurring": int((frequency > 0).sum()),
          "label_share_top10": float(ranked[:10].sum() / total),
          "label_share_top100": float(ranked[:100].sum() / total),
          "label_share_top1000": float(ranked[:1000].sum() / total),
          "top_class_video_share": float(ranked[0] / len(all_labels)),
          "rank_frequency_slope": slope,
          "pairs_sharing_vertical": float(same / max(pairs, 1))}


def generate(out_dir, num_train=1000, num_validate=300, num_test=100, num_classes=3862,
             num_verticals=None, rgb_size=1024, audio_size=128, max_frames=300, shards_per_split=4,
             video_level=False, seed=0, evidence_strength=1.0, vertical_affinity=0.9,
             missing_rate=0.1, noisy_rate=0.05, min_frames=20, log_every=2000):
  """Writes the shards, vocabulary.csv and stats.json under out_dir; returns the stats dict."""
  started = time.time()
  num_verticals = num_verticals or max(2, min(25, num_classes // 8))
  world = World(num_classes, num_verticals, rgb_size, audio_size, seed)
  os.makedirs(out_dir, exist_ok=True)
  stats = {"parameters": {"num_train": num_train, "num_validate": num_validate, "num_test": num_test,
                          "num_classes": num_classes, "num_verticals": num_verticals, "rgb_size": rgb_size,
                          "audio_size": audio_size, "max_frames": max_frames,
                          "shards_per_split": shards_per_split, "video_level": video_level, "seed": seed,
                          "evidence_strength": evidence_strength, "vertical_affinity": vertical_affinity,
                          "missing_rate": missing_rate, "noisy_rate": noisy_rate}}
  train_counts = np.zeros(num_classes, np.int64)
  all_labels, lengths, value_moments = [], [], np.zeros(3)
  done = 0
  total_videos = num_train + num_validate + num_test
  for split_index, (split, count) in enumerate((("train", num_train), ("validate", num_validate),
                                                ("test", num_test))):
    if count <= 0:
      continue
    rng = np.random.RandomState([seed, split_index])
    shards = [[[], []] for _ in range(min(shards_per_split, count))]
    for i in range(count):
      labels = draw_labels(world, rng, vertical_affinity)
      shown = [l for l in labels if rng.rand() >= noisy_rate]
      annotated = [l for l in labels if rng.rand() >= missing_rate] or labels[:1]
      num_frames = int(np.clip(np.exp(rng.normal(np.log(200), 0.6)), min_frames, max_frames))
      quantized = video_frames(world, rng, shown, num_frames, evidence_strength)
      video_id = "%s%07d" % (split[:3], i)
      record_labels = None if split == "test" else annotated
      shard = shards[i % len(shards)]
      shard[0].append(frame_example(video_id, record_labels, quantized, rgb_size))
      if video_level:
        shard[1].append(video_example(video_id, record_labels, quantized, rgb_size))
      if split == "train":
        train_counts[annotated] += 1
      all_labels.append(np.array(annotated))
      lengths.append(num_frames)
      rgb = utils.dequantize_np(quantized[:, :rgb_size])
      value_moments += [rgb.size, rgb.sum(), np.square(rgb).sum()]
      done += 1
      if log_every and done % log_every == 0:
        print("generated %d/%d videos, %.0f videos/s" % (done, total_videos, done / (time.time() - started)),
              flush=True)
    for level, index in (("frame", 0), ("video", 1)):
      if level == "video" and not video_level:
        continue
      folder = os.path.join(out_dir, level, split)
      os.makedirs(folder, exist_ok=True)
      for number, shard in enumerate(shards):
        _write_atomic(os.path.join(folder, "%s%04d.tfrecord" % (split, number)), shard[index])
  with open(os.path.join(out_dir, "vocabulary.csv"), "w") as f:
    f.write("Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl,Vertical1,Vertical2,Vertical3,WikiDescription\n")
    for c in range(num_classes):
      f.write('%d,%d,/m/syn%05d,Topic %d,,Vertical %d,,,"Synthetic topic %d of vertical %d"\n'
              % (c, train_counts[c], c, c, world.vertical[c], c, world.vertical[c]))
  seconds = time.time() - started
  mean = value_moments[1] / value_moments[0]
  stats.update(label_statistics(all_labels, world))
  stats.update({"videos": total_videos, "frames": {"mean": float(np.mean(lengths)), "min": int(np.min(lengths)),
                                                   "max": int(np.max(lengths))},
                "rgb_value_std": float(np.sqrt(value_moments[2] / value_moments[0] - mean ** 2)),
                "seconds": seconds, "videos_per_sec": total_videos / max(seconds, 1e-9)})
  with open(os.path.join(out_dir, "stats.json"), "w") as f:
    json.dump(stats, f, indent=2)
  return stats


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", required=True)
  for name, default in (("num_train", 1000), ("num_validate", 300), ("num_test", 100), ("num_classes", 3862),
                        ("num_verticals", 0), ("rgb_size", 1024), ("audio_size", 128), ("max_frames", 300),
                        ("shards_per_split", 4), ("seed", 0)):
    parser.add_argument("--" + name, type=int, default=default)
  parser.add_argument("--video_level", action="store_true", help="Also write video-level shards.")
  parser.add_argument("--evidence_strength", type=float, default=1.0)
  args = parser.parse_args(argv)
  stats = generate(args.out_dir, args.num_train, args.num_validate, args.num_test, args.num_classes,
                   args.num_verticals or None, args.rgb_size, args.audio_size, args.max_frames,
                   args.shards_per_split, args.video_level, args.seed, args.evidence_strength)
  print(json.dumps(stats, indent=2))


if __name__ == "__main__":
  main()
