"""Synthetic YouTube-8M: writes real-format shards (frame-level SequenceExamples, optionally video-level
Examples) for train / validate / test, a vocabulary.csv and a stats.json, deterministic by seed.

    python scripts/generate_synthetic_yt8m.py --out_dir=/tmp/yt8m --num_train=5000 --num_validate=1000 \
        --num_test=500 --shards_per_split=4 --video_level --seed=0

Format (docs/BACKGROUND.md, Data format). Frame level: context `id` (b"syn0000123", unique across splits) and `labels`
(sorted int64 list; omitted in the test split, as in the Kaggle test split); feature lists `rgb` and
`audio`, one uint8-quantized bytes string per frame (1 frame per second), quantized with the real
YouTube-8M quantizer (`utils.quantize`). Video level: `id`, `labels`, `mean_rgb`, `mean_audio`, the
means of the *dequantized* frames. Files: <out>/frame/<split>/<split>NNNN.tfrecord,
<out>/video/<split>/<split>NNNN.tfrecord; each shard is written under a temporary name and renamed.

The generative model, and why. Numbers in brackets are the real 2018 statistics of docs/BACKGROUND.md, Real data (or
measured on the real video-level sample shards named there); docs/DATA.md compares them with what the
defaults produce. Nothing was tuned on any frame-sampling, model or distillation result.

Labels (what a video is annotated with)
* Class popularity is Zipf-like: p(class c) ∝ (c + 1 + ZIPF_OFFSET)^-ZIPF_EXPONENT = (c + 3)^-1.2,
  class id = popularity rank (as in the real vocabulary, where index 0 "Game" is the most frequent).
  The offset flattens the head as in the real data (real top-5 counts fall only 2.7x); with it the top
  class is on ~20% of videos [20%], the top 10 / 100 / 1000 classes carry ~29/62/90% of the labels
  [29.1/61.5/90.5%] and the log-log slope over ranks 10-1000 is ≈ -1.12 [-1.12].
* Labels per video follow the real histogram: 24.7/22.5/18.6/15.6/8.8/4.6/2.5/1.3% for 1..8 labels and
  a geometric tail to 19 [max 19] holding the other 1.4%.
* Co-occurrence through verticals. Classes belong to one of `num_verticals` (25, as the real Vertical1)
  verticals of Zipf-like size (real label mass: 27.5% Arts & Entertainment, 20% Games, 12% Autos...);
  the top class is in the top vertical. A video picks a main vertical with probability equal to that
  vertical's label mass and draws each label, without replacement and popularity-weighted, from its main
  vertical with probability `vertical_affinity` (0.85), else from all classes. Both routes keep each
  class's marginal frequency proportional to its popularity; ~69% of the label pairs within a video
  then share a vertical [68.7%] (two random labels would share one ~18% of the time [15%]).
* Annotation noise. YouTube-8M labels come from an annotation system using metadata; they are described
  as high-precision, recall being the weaker side. So a video also has unannotated true topics
  (Poisson, on average a fraction `missing_rate` = 0.15 of its true topics, drawn like the others; they
  have evidence in the features but are not in `labels`), and each annotated label has, with
  probability `noisy_rate` = 0.05, no evidence at all. Both rates are assumptions, not measurements.

Features (what a frame looks like), rgb and audio alike, in the quantized (for rgb: whitened PCA) space:
    frame_t = style + setting(main vertical) + sigma_noise * (sqrt(rho) * shot_{s(t)} + sqrt(1-rho) * white_t)
              + sum over topics l with evidence of  a_l * 1[t in a segment of l] * direction_l
* style ~ N(0, sigma_style^2 I) per video: nuisance (channel, camera, recording conditions) shared by all
  its frames. Real mean_rgb is nearly isotropic (top principal component 0.5% of the variance) with std
  0.46 per value, and labels explain little of it linearly (a ridge fit of mean_rgb||mean_audio from
  the 300 most frequent labels explains 5.8% of held-out variance), so most video-level variance is
  nuisance: sigma_style = 0.41 for rgb and 0.59 for audio, which with the terms below gives video means
  of std ≈ 0.46 [0.46] and ≈ 0.69 [0.69].
* setting: the main vertical's shared direction with norm VERTICAL_BACKGROUND = 2.5 x U(0.5, 1.5), in
  every frame: a gaming video looks like gaming throughout, so any frame tells the vertical (a weak,
  shared cue), while the topics themselves appear in segments.
* Per-frame noise: sigma_noise = 0.6 per value, a share rho = 0.5 constant within a shot (cuts at
  random, shots of ~5 s on average) and the rest frame to frame: frames of one shot look alike. Frame
  values have std ≈ 0.75 (rgb; 0.92 audio), above their video means, as averaging removes noise. Values are
  clipped to [-2, 2] and quantized by the real quantizer [mean_rgb range -1.99..2.01].
* Evidence of a topic is present only in 1-3 contiguous segments, each of 5-40% of the video's length
  at a uniformly random position (they may overlap; ~38% of the frames on average): real topics are on
  screen for parts of a video, which is why the 2019 YouTube-8M release labels 5-second segments. In
  those frames the topic adds a_l times a unit class direction. Each class has its own direction per
  modality; classes of one vertical share part of it (squared cosine VERTICAL_SHARE = 0.3 between
  siblings: related topics look and sound alike). a_l = evidence_strength x EVIDENCE_AMPLITUDE (4.0)
  x class visibility (log-normal, sd 0.3, fixed per class: some topics are easier to see) x a per-video
  factor U(0.5, 1.5); audio evidence is AUDIO_GAIN = 0.75 of that against a larger audio style, so audio
  alone is the weaker cue, as in the real data.
* Amplitude. The evidence is a fixed norm, so the difficulty does not depend on the feature size
  (at small sizes it is a larger share of each value). EVIDENCE_AMPLITUDE = 4 with the setting above
  makes the label signal explain ~7% of held-out mean-feature variance (the real 5.8%, same ridge
  measurement). Per value it is 0.125 at 1024 dims against a frame noise of 0.73: a frame is a
  weak cue among thousands of classes; averaging the frames of a segment makes it clear. A ridge
  regression on the video means then reaches a lower GAP than on real data (docs/DATA.md): the synthetic
  task is, if anything, harder for video-level linear models; `evidence_strength` scales all
  label-dependent signal (evidence and setting).
* Consequences, not tuned for: a model that sees every frame can average each segment's evidence;
  k frames spread over the video catch fewer evidence frames (a short segment can fall between them);
  the first k frames see a topic only if one of its segments covers the start.
* rgb is produced the way YouTube-8M's is (pca_whitening_scale): PCA-space features with the real
  eigenvalue spectrum (nuisance ∝ sqrt(eig_j) per component, class evidence isotropic), whitened, then
  quantized; the terms above describe the whitened values. Audio has no PCA spectrum here.
* Lengths: 1 frame per second; real videos are 120-500 s, so the length in seconds is log-normal
  (median 200 s, sd 0.45) for 92% of videos and uniform in [20, 120) s for 8% short ones, and the frames
  written are min(length, max_frames): at max_frames 300 the mean is ~194 and ~19% are capped.

Speed: per video, the features are built by a few vectorised NumPy float32 operations (the only Python
loop runs over the video's few topics); frame noise rows come from two fixed banks of normal rows
(row a_i + row b_j, i and j random: exactly N(0, I), 16.7M combinations), which is ~10x cheaper than
fresh normals. Records are tf.train protos written with tf.io.TFRecordWriter; stats.json records videos/s.
"""

import argparse
import json
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402  (only tf.train protos and tf.io.TFRecordWriter are used)

import utils  # noqa: E402

FORMAT_VERSION = 3                            # 3: rgb drawn in PCA space with the real spectrum
EIGENVALS_PATH = os.path.join(ROOT, "yt8m_pca", "eigenvals.npy")
SPLITS = ("train", "validate", "test")

# Labels per video: the real 2018 histogram for 1..8 labels, then a geometric tail to 19 holding 1.4%.
_TAIL = 0.6 ** np.arange(11)
LABEL_COUNT_PERCENT = np.concatenate([[24.7, 22.5, 18.6, 15.6, 8.8, 4.6, 2.5, 1.3], 1.4 * _TAIL / _TAIL.sum()])
ZIPF_OFFSET, ZIPF_EXPONENT = 2.0, 1.2         # class popularity (c + 1 + offset)^-exponent
VERTICAL_EXPONENT = 1.0                      # vertical sizes ∝ (v + 1)^-exponent
VERTICAL_SHARE = 0.3                         # squared cosine between directions of one vertical
CLASS_VISIBILITY_SD = 0.3                    # log-normal sd of a class's evidence amplitude
EVIDENCE_AMPLITUDE = 4.0                     # norm of a class's evidence vector (rgb)
VERTICAL_BACKGROUND = 2.5                    # norm of the main vertical's setting in every frame
AUDIO_GAIN = 0.75                            # audio evidence amplitude relative to rgb
STYLE_STD = {"rgb": 0.41, "audio": 0.59}     # per-video style, per value
NOISE_STD = 0.6                              # per-frame noise, per value
NOISE_BANK_ROWS = 4096
SHOT_SHARE = 0.5                             # share of the frame-noise variance constant within a shot
MEAN_SHOT_SECONDS = 5.0
SEGMENTS_PER_TOPIC = (1, 3)
SEGMENT_FRACTION = (0.05, 0.40)
LENGTH_MEDIAN_SECONDS, LENGTH_LOG_SD, SHORT_FRACTION = 200.0, 0.45, 0.08
VOCABULARY_HEADER = ("Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl,Vertical1,Vertical2,Vertical3,"
                     "WikiDescription")
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "da", "fe", "gu", "hi", "ju", "be"]


def pca_whitening_scale(rgb_size):
  """Relative std of each rgb PCA component, sqrt(eig_j / mean eig) over the first rgb_size YouTube-8M
  eigenvalues (the ones the models' reverse whitening uses), float32 [rgb_size].

  YouTube-8M rgb is PCA-projected Inception features divided by sqrt(eig_j) (whitened), then
  quantized. Here the nuisance (style, setting, noise) has that spectrum in PCA space, so it is
  isotropic once whitened, and each class's evidence direction is isotropic in PCA space, so once
  whitened it weighs the low-variance components by 1 / sqrt(eig_j). Reverse whitening
  (x - 4/512) * (sqrt(eig_j) + 1e-4) undoes it: the spectrum in docs/DATA.md."""
  eigenvals = np.load(EIGENVALS_PATH)[:rgb_size, 0].astype(np.float64)
  if len(eigenvals) < rgb_size:
    raise ValueError("rgb_size=%d: the YouTube-8M PCA has %d components" % (rgb_size, len(eigenvals)))
  return np.sqrt(eigenvals / eigenvals.mean()).astype(np.float32)


def _rng(*key):
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


class World(object):
  """Classes, verticals, popularity and feature directions: shared by every split and video."""

  def __init__(self, num_classes, num_verticals, rgb_size, audio_size, seed):
    rng = _rng(seed, 7919)
    self.num_classes, self.num_verticals = num_classes, num_verticals
    popularity = (np.arange(num_classes) + 1.0 + ZIPF_OFFSET) ** -ZIPF_EXPONENT
    self.popularity = popularity / popularity.sum()
    sizes = (np.arange(num_verticals) + 1.0) ** -VERTICAL_EXPONENT
    vertical = rng.choice(num_verticals, num_classes, p=sizes / sizes.sum())
    vertical[0] = 0                                                # the top class in the top vertical
    missing = np.setdiff1d(np.arange(num_verticals), vertical)
    if len(missing):                                               # every vertical gets a class
      vertical[rng.choice(np.arange(1, num_classes), len(missing), replace=False)] = missing
    self.vertical = vertical
    self.vertical_mass = np.bincount(vertical, weights=self.popularity, minlength=num_verticals)
    self.members = [np.flatnonzero(vertical == v) for v in range(num_verticals)]
    self.member_cdf = [np.cumsum(self.popularity[m]) / self.popularity[m].sum() for m in self.members]
    self.global_cdf = np.cumsum(self.popularity)
    self.global_cdf /= self.global_cdf[-1]
    self.vertical_cdf = np.cumsum(self.vertical_mass) / self.vertical_mass.sum()
    self.visibility = np.exp(rng.normal(0.0, CLASS_VISIBILITY_SD, num_classes)).astype(np.float32)
    self.directions, self.vertical_directions = {}, {}
    self.pca_scale = pca_whitening_scale(rgb_size)
    for name, size in (("rgb", rgb_size), ("audio", audio_size)):
      shared = rng.standard_normal((num_verticals, size), dtype=np.float32)
      own = rng.standard_normal((num_classes, size), dtype=np.float32)
      shared /= np.linalg.norm(shared, axis=1, keepdims=True)
      own /= np.linalg.norm(own, axis=1, keepdims=True)
      direction = np.sqrt(VERTICAL_SHARE) * shared[vertical] + np.sqrt(1 - VERTICAL_SHARE) * own
      if name == "rgb":   # drawn in PCA space, stored whitened (see pca_whitening_scale)
        direction, shared = direction / self.pca_scale, shared / self.pca_scale
        shared /= np.linalg.norm(shared, axis=1, keepdims=True)
      self.directions[name] = direction / np.linalg.norm(direction, axis=1, keepdims=True)
      self.vertical_directions[name] = shared
    self.rgb_size, self.audio_size = rgb_size, audio_size
    # Two banks of standard normal rows; a frame's noise is (a_i + b_j) / sqrt(2) with random i, j: exactly
    # N(0, I) per frame, 2^24 distinct combinations, and ~20x cheaper than fresh normals per frame.
    self.noise_banks = rng.standard_normal((2, NOISE_BANK_ROWS, rgb_size + audio_size), dtype=np.float32)
    self.noise_banks *= np.float32(np.sqrt(0.5))
    self.names = ["".join(_SYLLABLES[i] for i in rng.integers(0, len(_SYLLABLES), 3)).capitalize()
                  for _ in range(num_classes)]
    self.vertical_names = ["Vertical %s" % "".join(_SYLLABLES[i] for i in rng.integers(0, len(_SYLLABLES), 2))
                           .capitalize() for _ in range(num_verticals)]


def _draw(cdf, rng):
  return int(min(np.searchsorted(cdf, rng.random(), side="right"), len(cdf) - 1))


def draw_topics(world, rng, vertical_affinity, missing_rate):
  """(annotated labels in draw order, unannotated true topics, main vertical) of one video."""
  count = min(1 + int(np.searchsorted(np.cumsum(LABEL_COUNT_PERCENT) / LABEL_COUNT_PERCENT.sum(),
                                      rng.random(), side="right")), world.num_classes)
  extra = rng.poisson(count * missing_rate / (1.0 - missing_rate)) if missing_rate > 0 else 0
  total = min(count + extra, world.num_classes)
  main = _draw(world.vertical_cdf, rng)
  members, member_cdf = world.members[main], world.member_cdf[main]
  chosen, seen, tries = [], set(), 0
  while len(chosen) < total:
    tries += 1
    if tries < 50 * total and rng.random() < vertical_affinity:
      topic = int(members[_draw(member_cdf, rng)])
    elif tries < 200 * total:
      topic = _draw(world.global_cdf, rng)
    else:                                                 # pathological tiny vocabularies only
      topic = int(rng.choice(np.setdiff1d(np.arange(world.num_classes), chosen)))
    if topic not in seen:
      seen.add(topic)
      chosen.append(topic)
  return chosen[:count], chosen[count:], main


class Shape(object):
  """How long the videos are and where their topics show: the defaults are the calibrated ones
  (module docstring); the distillation diagnosis (docs/DISTILLATION.md) moves them.
    segments_per_topic  (lo, hi) evidence segments per topic, inclusive
    segment_fraction    (lo, hi) each segment's length as a fraction of the video's
    short_fraction      share of short videos, 20-120 s uniform
    length_median       median length in seconds of the other videos (log-normal, sd LENGTH_LOG_SD)"""

  def __init__(self, segments_per_topic=SEGMENTS_PER_TOPIC, segment_fraction=SEGMENT_FRACTION,
               short_fraction=SHORT_FRACTION, length_median=LENGTH_MEDIAN_SECONDS):
    self.segments_per_topic = tuple(int(v) for v in segments_per_topic)
    self.segment_fraction = tuple(float(v) for v in segment_fraction)
    self.short_fraction, self.length_median = float(short_fraction), float(length_median)
    lo, hi = self.segments_per_topic
    if not 1 <= lo <= hi or not 0 < self.segment_fraction[0] <= self.segment_fraction[1] <= 1 or \
        not 0 <= self.short_fraction <= 1 or self.length_median <= 0:
      raise ValueError("segments_per_topic needs 1 <= lo <= hi, segment_fraction 0 < lo <= hi <= 1, "
                       "short_fraction in [0, 1] and length_median > 0")

  def describe(self):
    return {"segments_per_topic": list(self.segments_per_topic),
            "segment_fraction": list(self.segment_fraction), "short_fraction": self.short_fraction,
            "length_median_seconds": self.length_median, "length_log_sd": LENGTH_LOG_SD}


DEFAULT_SHAPE = Shape()


def video_length(rng, min_frames, max_frames, shape=DEFAULT_SHAPE):
  """Frames written for one video: min(length in seconds, max_frames), at least min_frames."""
  if rng.random() < shape.short_fraction:
    seconds = rng.uniform(20.0, 120.0)
  else:
    seconds = shape.length_median * np.exp(LENGTH_LOG_SD * rng.standard_normal())
  return int(min(max(int(seconds), min_frames), max_frames))


def evidence_mask(rng, num_frames, num_topics, shape=DEFAULT_SHAPE):
  """[num_frames, num_topics] float32: 1 where a topic's evidence is on screen (its segments)."""
  mask = np.zeros((num_frames, num_topics), np.float32)
  if num_topics == 0:
    return mask
  per_topic = rng.integers(shape.segments_per_topic[0], shape.segments_per_topic[1] + 1, num_topics)
  owner = np.repeat(np.arange(num_topics), per_topic)
  lengths = np.maximum(1, np.round(rng.uniform(*shape.segment_fraction, size=len(owner))
                                   * num_frames)).astype(int)
  starts = np.floor(rng.random(len(owner)) * (num_frames - lengths + 1)).astype(int)
  t = np.arange(num_frames)[:, None]
  inside = (t >= starts) & (t < starts + lengths)                      # [frames, segments]
  np.maximum.at(mask.T, owner, inside.T.astype(np.float32))
  return mask


def _normal_rows(world, rng, count):
  """[count, rgb_size + audio_size] float32 rows distributed N(0, I), drawn from the world's banks."""
  index = rng.integers(0, NOISE_BANK_ROWS, (2, count))
  return world.noise_banks[0][index[0]] + world.noise_banks[1][index[1]]


def video_features(world, rng, evidence_topics, num_frames, evidence_strength, main_vertical=None,
                   shape=DEFAULT_SHAPE):
  """(quantized uint8 [num_frames, rgb_size + audio_size], evidence mask [num_frames, topics])."""
  mask = evidence_mask(rng, num_frames, len(evidence_topics), shape)
  topics = np.asarray(evidence_topics, np.int64)
  amplitude = (evidence_strength * EVIDENCE_AMPLITUDE * world.visibility[topics]
               * rng.uniform(0.5, 1.5, len(topics)).astype(np.float32))
  cuts = rng.random(num_frames) < 1.0 / MEAN_SHOT_SECONDS
  cuts[0] = True
  shot = np.cumsum(cuts) - 1
  size = world.rgb_size + world.audio_size
  style_std = np.repeat(np.float32([STYLE_STD["rgb"], STYLE_STD["audio"]]), [world.rgb_size, world.audio_size])
  frames = _normal_rows(world, rng, num_frames)
  frames *= np.float32(NOISE_STD * np.sqrt(1 - SHOT_SHARE))
  frames += (np.float32(NOISE_STD * np.sqrt(SHOT_SHARE)) * _normal_rows(world, rng, int(shot[-1]) + 1))[shot]
  style = style_std * rng.standard_normal(size, dtype=np.float32)
  if main_vertical is not None and VERTICAL_BACKGROUND:
    setting = np.float32(evidence_strength * VERTICAL_BACKGROUND * rng.uniform(0.5, 1.5))
    style[:world.rgb_size] += setting * world.vertical_directions["rgb"][main_vertical]
    style[world.rgb_size:] += (np.float32(AUDIO_GAIN) * setting) * world.vertical_directions["audio"][main_vertical]
  frames += style
  for column, topic in enumerate(topics):     # a few topics; elementwise (a tiny BLAS matmul is slower)
    rows = mask[:, column] > 0
    frames[rows, :world.rgb_size] += amplitude[column] * world.directions["rgb"][topic]
    frames[rows, world.rgb_size:] += (np.float32(AUDIO_GAIN) * amplitude[column]) * world.directions["audio"][topic]
  return utils.quantize(frames), mask


def frame_record(video_id, labels, quantized, rgb_size):
  """Serialized tf.train.SequenceExample in the YouTube-8M frame-level format."""
  example = tf.train.SequenceExample()
  example.context.feature["id"].bytes_list.value.append(video_id)
  if labels is not None:
    example.context.feature["labels"].int64_list.value.extend(labels)
  lists = example.feature_lists.feature_list
  for name, block in (("rgb", quantized[:, :rgb_size]), ("audio", quantized[:, rgb_size:])):
    feature = lists[name].feature
    for row in block:
      feature.add().bytes_list.value.append(row.tobytes())
  return example.SerializeToString()


def video_means(quantized):
  """Mean over frames of the dequantized values (float32), computed exactly from the uint8 sums."""
  return utils.dequantize_np(np.zeros(1, np.uint8))[0] + np.float32(4.0 / 255.0) * (
      quantized.sum(axis=0, dtype=np.int64) / np.float64(len(quantized))).astype(np.float32)


def video_record(video_id, labels, means, rgb_size):
  """Serialized tf.train.Example in the YouTube-8M video-level format."""
  example = tf.train.Example()
  feature = example.features.feature
  feature["id"].bytes_list.value.append(video_id)
  if labels is not None:
    feature["labels"].int64_list.value.extend(labels)
  feature["mean_rgb"].float_list.value.extend(means[:rgb_size].tolist())
  feature["mean_audio"].float_list.value.extend(means[rgb_size:].tolist())
  return example.SerializeToString()


def _replace_atomically(path, write):
  tmp = "%s.tmp%d" % (path, os.getpid())
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


class _Stats(object):
  """Running statistics of what was written."""

  def __init__(self, world):
    self.world = world
    self.annotated, self.lengths = [], []
    self.true_topics = self.unannotated = self.annotated_total = self.without_evidence = 0
    self.coverage = []
    self.histograms = {"rgb": np.zeros(256, np.int64), "audio": np.zeros(256, np.int64)}
    self.mean_moments = {name: np.zeros(2) for name in ("rgb", "audio")}
    self.mean_range = {name: [np.inf, -np.inf] for name in ("rgb", "audio")}

  def add(self, labels, unannotated, shown, quantized, means, mask):
    rgb_size = self.world.rgb_size
    self.annotated.append(np.asarray(labels, np.int64))
    self.lengths.append(len(quantized))
    self.true_topics += len(shown)                      # topics with evidence in the features
    self.unannotated += len(unannotated)
    self.annotated_total += len(labels)
    self.without_evidence += len(labels) - (len(shown) - len(unannotated))
    if mask.size:
      self.coverage.extend(mask.mean(axis=0).tolist())
    for name, block, mean in (("rgb", quantized[:, :rgb_size], means[:rgb_size]),
                              ("audio", quantized[:, rgb_size:], means[rgb_size:])):
      self.histograms[name] += np.bincount(block.ravel(), minlength=256)
      self.mean_moments[name] += [mean.sum(dtype=np.float64), np.square(mean, dtype=np.float64).sum()]
      self.mean_range[name] = [min(self.mean_range[name][0], float(mean.min())),
                               max(self.mean_range[name][1], float(mean.max()))]

  def summary(self):
    world = self.world
    stats = label_statistics(self.annotated, world.vertical, world.num_classes)
    lengths = np.asarray(self.lengths)
    stats["frames"] = {"mean": float(lengths.mean()), "median": float(np.median(lengths)),
                       "min": int(lengths.min()), "max": int(lengths.max()),
                       "fraction_at_max_frames": float(np.mean(lengths == lengths.max()))}
    stats["annotation"] = {
        "true_topics_unannotated_fraction": self.unannotated / max(self.true_topics, 1),
        "annotated_without_evidence_fraction": self.without_evidence / max(self.annotated_total, 1),
        "evidence_frame_fraction_per_topic_mean": float(np.mean(self.coverage)) if self.coverage else 0.0}
    values = utils.dequantize_np(np.arange(256, dtype=np.uint8)).astype(np.float64)
    features = {}
    for name in ("rgb", "audio"):
      counts = self.histograms[name]
      n = counts.sum()
      mean = float((counts * values).sum() / n)
      used = values[counts > 0]
      m = self.mean_moments[name] / (len(self.lengths) * (world.rgb_size if name == "rgb" else world.audio_size))
      features[name] = {"frame_value_mean": mean,
                        "frame_value_std": float(np.sqrt((counts * (values - mean) ** 2).sum() / n)),
                        "frame_value_min": float(used.min()), "frame_value_max": float(used.max()),
                        "frame_value_clipped_fraction": float((counts[0] + counts[255]) / n),
                        "video_mean_std": float(np.sqrt(max(m[1] - m[0] ** 2, 0.0))),
                        "video_mean_min": self.mean_range[name][0], "video_mean_max": self.mean_range[name][1]}
    stats["features"] = features
    return stats


def label_statistics(label_lists, vertical, num_classes):
  """Label statistics of docs/BACKGROUND.md, Real data, for a list of label arrays."""
  counts = np.array([len(labels) for labels in label_lists])
  flat = np.concatenate(label_lists) if len(label_lists) else np.zeros(0, np.int64)
  frequency = np.bincount(flat, minlength=num_classes)
  ranked = np.sort(frequency)[::-1]
  total = max(int(ranked.sum()), 1)
  same = pairs = 0
  for labels in label_lists:
    v = vertical[labels]
    pairs += len(v) * (len(v) - 1) // 2
    same += (int(np.sum(v[:, None] == v[None, :])) - len(v)) // 2
  # Rank-frequency slope over ranks 10..1000 of 3862 (docs/BACKGROUND.md, Real data), scaled to other vocabulary sizes.
  last = max(20, int(round(num_classes * 1000 / 3862.0)))
  ranks = np.arange(1, len(ranked) + 1)
  fit = (ranks >= 10) & (ranks <= last) & (ranked > 0)
  slope = float(np.polyfit(np.log(ranks[fit]), np.log(ranked[fit]), 1)[0]) if fit.sum() > 2 else None
  return {"videos_counted": len(label_lists),
          "labels_per_video": {"mean": float(counts.mean()), "median": float(np.median(counts)),
                               "p90": float(np.percentile(counts, 90)), "max": int(counts.max()),
                               "percent_with_1_to_8": [round(100 * float(np.mean(counts == n)), 2)
                                                       for n in range(1, 9)]},
          "classes_occurring": int((frequency > 0).sum()),
          "label_share_top10": float(ranked[:10].sum() / total),
          "label_share_top100": float(ranked[:100].sum() / total),
          "label_share_top1000": float(ranked[:1000].sum() / total),
          "top_class_video_share": float(ranked[0] / max(len(label_lists), 1)),
          "rank_frequency_slope": slope, "rank_frequency_slope_ranks": [10, last],
          "pairs_sharing_vertical": float(same / max(pairs, 1))}


def iter_videos(world, split_index, count, seed, min_frames, max_frames, vertical_affinity, missing_rate,
                noisy_rate, evidence_strength, shape=DEFAULT_SHAPE):
  """Yields (annotated labels sorted, unannotated topics, topics with evidence, quantized frames, mask)
  for videos 0..count-1 of one split; video i depends only on (seed, split, i) and the world."""
  for i in range(count):
    rng = _rng(seed, split_index, i)
    annotated, unannotated, main = draw_topics(world, rng, vertical_affinity, missing_rate)
    shown = [label for label in annotated if rng.random() >= noisy_rate] + unannotated
    num_frames = video_length(rng, min_frames, max_frames, shape)
    quantized, mask = video_features(world, rng, shown, num_frames, evidence_strength, main, shape)
    yield sorted(annotated), unannotated, shown, quantized, mask


def generate(out_dir, num_train=1000, num_validate=300, num_test=100, num_classes=3862, num_verticals=None,
             rgb_size=1024, audio_size=128, max_frames=300, shards_per_split=4, video_level=False, seed=0,
             evidence_strength=1.0, vertical_affinity=0.85, missing_rate=0.15, noisy_rate=0.05, min_frames=20,
             log_every_seconds=10.0, verbose=True, shape=DEFAULT_SHAPE):
  """Writes the shards, vocabulary.csv and stats.json under out_dir; returns the stats dict."""
  started = time.time()
  num_verticals = int(num_verticals or max(2, min(25, num_classes // 8)))
  if num_classes < 1 or not 1 <= num_verticals <= num_classes:
    raise ValueError("need num_classes >= 1 and 1 <= num_verticals <= num_classes")
  if rgb_size < 1 or audio_size < 1 or max_frames < 1 or shards_per_split < 1:
    raise ValueError("rgb_size, audio_size, max_frames and shards_per_split must be positive")
  min_frames = max(1, min(min_frames, max_frames))
  parameters = {"num_train": num_train, "num_validate": num_validate, "num_test": num_test,
                "num_classes": num_classes, "num_verticals": num_verticals, "rgb_size": rgb_size,
                "audio_size": audio_size, "max_frames": max_frames, "min_frames": min_frames,
                "shards_per_split": shards_per_split, "video_level": bool(video_level), "seed": seed,
                "evidence_strength": evidence_strength, "vertical_affinity": vertical_affinity,
                "missing_rate": missing_rate, "noisy_rate": noisy_rate, "format_version": FORMAT_VERSION,
                "constants": {"zipf_offset": ZIPF_OFFSET, "zipf_exponent": ZIPF_EXPONENT,
                              "vertical_exponent": VERTICAL_EXPONENT, "vertical_share": VERTICAL_SHARE,
                              "class_visibility_sd": CLASS_VISIBILITY_SD,
                              "evidence_amplitude": EVIDENCE_AMPLITUDE,
                              "vertical_background": VERTICAL_BACKGROUND, "audio_gain": AUDIO_GAIN,
                              "style_std": STYLE_STD, "noise_std": NOISE_STD, "shot_share": SHOT_SHARE,
                              "mean_shot_seconds": MEAN_SHOT_SECONDS}}
  parameters["constants"].update(shape.describe())
  world = World(num_classes, num_verticals, rgb_size, audio_size, seed)
  stats = _Stats(world)
  train_counts = np.zeros(num_classes, np.int64)
  os.makedirs(out_dir, exist_ok=True)
  total = num_train + num_validate + num_test
  done, next_log, offset, files = 0, started + log_every_seconds, 0, {}
  for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_validate, num_test))):
    levels = ("frame", "video") if video_level else ("frame",)
    folders = {level: os.path.join(out_dir, level, split) for level in levels}
    num_shards = min(shards_per_split, count)
    videos = iter_videos(world, split_index, count, seed, min_frames, max_frames, vertical_affinity,
                         missing_rate, noisy_rate, evidence_strength, shape)
    names = ["%s%04d.tfrecord" % (split, shard) for shard in range(num_shards)]
    for folder in folders.values():
      os.makedirs(folder, exist_ok=True)
    for shard in range(num_shards):
      size = (shard + 1) * count // num_shards - shard * count // num_shards
      writers, tmps = {}, {}
      try:
        for level, folder in folders.items():
          tmps[level] = os.path.join(folder, "%s.tmp%d" % (names[shard], os.getpid()))
          writers[level] = tf.io.TFRecordWriter(tmps[level])
        for _ in range(size):
          labels, unannotated, shown, quantized, mask = next(videos)
          video_id = b"syn%07d" % offset
          written = None if split == "test" else labels
          writers["frame"].write(frame_record(video_id, written, quantized, rgb_size))
          means = video_means(quantized)
          if video_level:
            writers["video"].write(video_record(video_id, written, means, rgb_size))
          if split == "train":
            train_counts[labels] += 1
          stats.add(labels, unannotated, shown, quantized, means, mask)
          offset += 1
          done += 1
          if verbose and time.time() >= next_log:
            print("%s: %d/%d videos written, %.1f videos/s" % (split, done, total, done / (time.time() - started)),
                  flush=True)
            next_log = time.time() + log_every_seconds
        for level in levels:
          writers.pop(level).close()
          os.replace(tmps[level], os.path.join(folders[level], names[shard]))
      finally:
        for level, writer in writers.items():
          writer.close()
        for tmp in tmps.values():
          if os.path.exists(tmp):
            os.remove(tmp)
    for level, folder in folders.items():               # drop shards left by an earlier, bigger run
      for name in os.listdir(folder):
        if re.match(r"^%s\d{4}\.tfrecord$" % split, name) and name not in names:
          os.remove(os.path.join(folder, name))
      files["%s/%s" % (level, split)] = len(names)

  def write_vocabulary(path):
    with open(path, "w") as f:
      f.write(VOCABULARY_HEADER + "\n")
      for c in range(num_classes):
        name = world.names[c]
        f.write('%d,%d,/m/syn%05d,%s,https://example.org/wiki/%s,%s,,,"Synthetic topic %d (%s)."\n'
                % (c, train_counts[c], c, name, name, world.vertical_names[world.vertical[c]], c,
                   world.vertical_names[world.vertical[c]]))
  _replace_atomically(os.path.join(out_dir, "vocabulary.csv"), write_vocabulary)

  seconds = time.time() - started
  result = {"parameters": parameters, "videos": total, "shards": files}
  if total:
    result.update(stats.summary())
    result["labels_counted_over"] = "annotated labels of all generated videos (test labels are not written)"
  result["timing"] = {"seconds": seconds, "videos_per_sec": total / max(seconds, 1e-9)}
  result["videos_per_sec"] = result["timing"]["videos_per_sec"]

  def write_stats(path):
    with open(path, "w") as f:
      json.dump(result, f, indent=2, sort_keys=True)
  _replace_atomically(os.path.join(out_dir, "stats.json"), write_stats)
  if verbose:
    print("wrote %d videos to %s in %.1f s: %.1f videos/s" % (total, out_dir, seconds, total / max(seconds, 1e-9)),
          flush=True)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--out_dir", required=True, help="Output folder (frame/, video/, vocabulary.csv, stats.json).")
  parser.add_argument("--num_train", type=int, default=1000, help="Videos in the train split.")
  parser.add_argument("--num_validate", type=int, default=300, help="Videos in the validate split.")
  parser.add_argument("--num_test", type=int, default=100, help="Videos in the test split (written without labels).")
  parser.add_argument("--num_classes", type=int, default=3862, help="Vocabulary size (2018 release: 3862).")
  parser.add_argument("--num_verticals", type=int, default=0, help="0: min(25, num_classes // 8), at least 2.")
  parser.add_argument("--rgb_size", type=int, default=1024, help="Bytes per rgb frame.")
  parser.add_argument("--audio_size", type=int, default=128, help="Bytes per audio frame.")
  parser.add_argument("--max_frames", type=int, default=300, help="Frames written are min(length, max_frames).")
  parser.add_argument("--min_frames", type=int, default=20, help="Shortest video (frames).")
  parser.add_argument("--shards_per_split", type=int, default=4, help="Shards per split (fewer if fewer videos).")
  parser.add_argument("--video_level", action="store_true", help="Also write video-level shards.")
  parser.add_argument("--seed", type=int, default=0, help="Same arguments and seed: identical shards.")
  parser.add_argument("--evidence_strength", type=float, default=1.0,
                      help="Multiplier of all label-dependent signal (1 = the calibrated defaults, docs/DATA.md).")
  parser.add_argument("--vertical_affinity", type=float, default=0.85,
                      help="Probability that a label comes from the video's main vertical.")
  parser.add_argument("--missing_rate", type=float, default=0.15,
                      help="Mean fraction of true topics (with evidence) left unannotated.")
  parser.add_argument("--noisy_rate", type=float, default=0.05,
                      help="Probability that an annotated label has no evidence in the features.")
  parser.add_argument("--segments_per_topic", default="%d,%d" % SEGMENTS_PER_TOPIC,
                      help="LO,HI evidence segments per topic (inclusive).")
  parser.add_argument("--segment_fraction", default="%g,%g" % SEGMENT_FRACTION,
                      help="LO,HI length of each segment as a fraction of the video's.")
  parser.add_argument("--short_fraction", type=float, default=SHORT_FRACTION,
                      help="Share of short videos (20-120 s, uniform).")
  parser.add_argument("--length_median", type=float, default=LENGTH_MEDIAN_SECONDS,
                      help="Median length in seconds of the other videos (log-normal).")
  parser.add_argument("--log_every_seconds", type=float, default=10.0, help="Progress line period.")
  args = parser.parse_args(argv)
  try:
    shape = Shape([int(v) for v in args.segments_per_topic.split(",")],
                  [float(v) for v in args.segment_fraction.split(",")], args.short_fraction,
                  args.length_median)
  except ValueError as error:
    raise utils.InputError("--segments_per_topic=%s --segment_fraction=%s --short_fraction=%s "
                           "--length_median=%s: %s" % (args.segments_per_topic, args.segment_fraction,
                                                       args.short_fraction, args.length_median, error))
  stats = generate(args.out_dir, num_train=args.num_train, num_validate=args.num_validate,
                   num_test=args.num_test, num_classes=args.num_classes, num_verticals=args.num_verticals or None,
                   rgb_size=args.rgb_size, audio_size=args.audio_size, max_frames=args.max_frames,
                   shards_per_split=args.shards_per_split, video_level=args.video_level, seed=args.seed,
                   evidence_strength=args.evidence_strength, vertical_affinity=args.vertical_affinity,
                   missing_rate=args.missing_rate, noisy_rate=args.noisy_rate, min_frames=args.min_frames,
                   log_every_seconds=args.log_every_seconds, shape=shape)
  print(json.dumps(stats, indent=2, sort_keys=True))


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
