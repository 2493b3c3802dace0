"""Measures the rgb PCA spectrum of frame-level shards: the variance of each component after the
models' reverse whitening, (x - 4/512) * (sqrt(eig_j) + 1e-4), against the YouTube-8M eigenvalues,
by bands of components (docs/DATA.md). A spectrum that follows eig_j means the frames were produced
as YouTube-8M's are (PCA space, whitened, quantized) and reverse whitening restores PCA space.

  python scripts/pca_spectrum.py --data_pattern='out/study/data/frame/train/*.tfrecord' --rgb_size=64
"""

import argparse
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tensorflow as tf  # noqa: E402  (protos and the TFRecord iterator only)

import frame_level_models  # noqa: E402
import utils  # noqa: E402


def rgb_frames(files, rgb_size, max_videos):
  """Dequantized rgb frames [n, rgb_size] of up to max_videos videos."""
  frames = []
  for path in files:
    for record in tf.compat.v1.io.tf_record_iterator(path):
      example = tf.train.SequenceExample.FromString(record)
      rows = [np.frombuffer(f.bytes_list.value[0], np.uint8)
              for f in example.feature_lists.feature_list["rgb"].feature]
      frames.append(utils.dequantize_np(np.stack(rows))[:, :rgb_size])
      if len(frames) >= max_videos:
        return np.concatenate(frames)
  return np.concatenate(frames)


def spectrum_table(frames, eigenvals, bands):
  """Rows (first, last component, mean eig, measured variance, measured / expected) per band; the
  expected variance is eig_j times one scale fitted over all components."""
  restored = (frames - 4.0 / 512) * (np.sqrt(eigenvals) + 1e-4)
  variance = restored.var(axis=0)
  scale = variance.sum() / eigenvals.sum()
  rows = []
  for first, last in bands:
    band = slice(first, last + 1)
    rows.append((first, last, float(eigenvals[band].mean()), float(variance[band].mean()),
                 float(variance[band].mean() / (scale * eigenvals[band].mean()))))
  return rows, float(np.corrcoef(np.log(variance), np.log(eigenvals))[0, 1])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_pattern", required=True)
  parser.add_argument("--rgb_size", type=int, default=1024)
  parser.add_argument("--max_videos", type=int, default=200)
  args = parser.parse_args(argv)
  files = sorted(glob.glob(args.data_pattern))
  if not files:
    raise utils.InputError("--data_pattern=%s matches no file" % args.data_pattern)
  frames = rgb_frames(files, args.rgb_size, args.max_videos)
  eigenvals = frame_level_models.load_eigenvals("", args.rgb_size)
  edges = np.unique(np.geomspace(1, args.rgb_size, 7).astype(int)) - 1
  bands = [(int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:])] + [(int(edges[-1]), args.rgb_size - 1)]
  bands = [(a, max(a, b)) for a, b in bands]
  rows, correlation = spectrum_table(frames, eigenvals, bands)
  print("%d frames; log-log correlation of measured variance with eig_j: %.4f" % (len(frames), correlation))
  print("| components | mean eig_j | measured variance | measured / expected |")
  print("|---|---|---|---|")
  for first, last, eig, variance, ratio in rows:
    print("| %d-%d | %.4f | %.4f | %.3f |" % (first, last, eig, variance, ratio))


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
