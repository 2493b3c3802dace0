"""YouTube-8M evaluation metrics (starter API), vectorised and streaming: Hit@1, PERR, GAP@k, mAP, loss.

Definitions (docs/BACKGROUND.md, Metrics); inputs are float scores and 0/1 labels, both [videos, classes]:
  Hit@1  fraction of videos whose top-scored class is a true label. A video without labels counts as
         a miss (it is in the denominator; no hit is possible).
  PERR   per video with n > 0 labels, precision of its n top-scored classes; a video without labels
         counts 0 (the starter's); mean over all videos.
  GAP@k  pool every video's top-k (score, label) pairs, rank by score, non-interpolated AP divided by
         P = all true labels of all videos (positives outside a top-k count in P but are never hit).
  mAP    per class: AP over the pooled top-k entries of that class divided by the class's total
         positives; mean over classes with at least one positive.
Ties: ranking for GAP/mAP puts tied scores in a seeded random order (average_precision.ranked_order).
Per-video selections (Hit@1, PERR, top-k) break ties by the lower class index, like np.argmax.

EvaluationMetrics keeps, per batch, only each video's top-k scores, labels and class ids plus per-class
positive counts (memory O(videos x top_k)); get() ranks the pooled entries once for GAP and mAP.
"""

import numpy as np

from average_precision import ap_from_ranked_hits, ranked_order
from mean_average_precision_calculator import grouped_ap


def _as_batch(predictions, labels):
  """Float scores (float32 kept, else float64) and bool labels, both [videos, classes]."""
  predictions = np.asarray(predictions)
  if predictions.dtype != np.float32:
    predictions = predictions.astype(np.float64)
  labels = np.asarray(labels)
  if predictions.ndim != 2 or predictions.shape != labels.shape:
    raise ValueError("predictions and labels must both be [videos, classes], got %s and %s"
                     % (predictions.shape, labels.shape))
  return predictions, labels > 0


def _row_then_descending_order(rows, values):
  """Stable order by row, then descending value (equal values keep their input order).

  float32 values are packed with the row into one int64 key (row in the high 32 bits, the float's
  bits mapped to an order-reversing uint32 in the low ones): one sort instead of a slower lexsort.
  """
  if values.dtype == np.float32:
    bits = (values + np.float32(0.0)).view(np.uint32)        # + 0.0 turns -0.0 into +0.0
    ascending = np.where(bits >> np.uint32(31) == 1, ~bits, bits | np.uint32(0x80000000))
    key = (rows.astype(np.int64) << 32) | (~ascending).astype(np.int64)
    return np.argsort(key, kind="stable")
  return np.lexsort((-values, rows))


def _top_columns(predictions, k):
  """Class indices of each row's k highest scores, [videos, k], by descending score (ties: lower index).

  Fast path for wide rows: split the columns into G >= 4k interleaved groups; the k-th largest group
  maximum is a lower bound on the row's k-th largest score (k distinct groups reach it), so only the
  few entries at or above it (about k + a little) need sorting. Narrow rows, or heavy ties that make
  the candidate set large, use an exact partition-based selection instead.
  """
  videos, classes = predictions.shape
  k = min(k, classes)
  groups = max(128, 4 * k)
  width = classes // groups
  if videos and width >= 4:
    group_max = predictions[:, :groups * width].reshape(videos, width, groups).max(axis=1)
    bound = np.partition(group_max, groups - k, axis=1)[:, groups - k]
    candidates = predictions >= bound[:, None]
    if np.count_nonzero(candidates) <= 8 * k * videos:
      flat = np.flatnonzero(candidates)            # row-major: columns ascending within a row
      rows, cols = np.divmod(flat, classes)
      order = _row_then_descending_order(rows, predictions.ravel()[flat])
      rows, cols = rows[order], cols[order]
      per_row = np.bincount(rows, minlength=videos)
      rank = np.arange(rows.size) - (np.cumsum(per_row) - per_row)[rows]
      return cols[rank < k].reshape(videos, k)
  # Exact fallback: everything above the k-th largest score, then the lowest-index tied ones.
  kth = np.partition(predictions, classes - k, axis=1)[:, classes - k][:, None]
  above = predictions > kth
  tied = predictions == kth
  room = k - np.count_nonzero(above, axis=1)
  chosen = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= room[:, None]))
  cols = np.nonzero(chosen)[1].reshape(videos, k)
  order = np.argsort(-np.take_along_axis(predictions, cols, axis=1), axis=1, kind="stable")
  return np.take_along_axis(cols, order, axis=1)


def _video_stats(predictions, labels, depth):
  """Top-`depth` columns, their hits, per-video label counts, Hit@1 flags and PERR per video (the
  starter's: 0 for a video without labels, which stays in the average).

  The selection is widened to the largest label count so PERR needs no second pass.
  """
  counts = np.count_nonzero(labels, axis=1)
  width = max(depth, int(counts.max()) if counts.size else 0, 1)
  top = _top_columns(predictions, width)
  hits = np.take_along_axis(labels, top, axis=1)
  hit_at_one = labels[np.arange(len(labels)), np.argmax(predictions, axis=1)]
  labelled = np.flatnonzero(counts)
  cumulative = np.cumsum(hits[labelled], axis=1)
  perr = np.zeros(len(labels))
  perr[labelled] = cumulative[np.arange(labelled.size), counts[labelled] - 1] / counts[labelled]
  return top[:, :depth], hits[:, :depth], counts, hit_at_one, perr


def calculate_hit_at_one(predictions, actuals):
  """Hit@1 of a batch: mean over videos of [the top-scored class is a true label]."""
  predictions, actuals = _as_batch(predictions, actuals)
  if not len(predictions):
    return 0.0
  return float(np.mean(actuals[np.arange(len(actuals)), np.argmax(predictions, axis=1)]))


def calculate_precision_at_equal_recall_rate(predictions, actuals):
  """PERR of a batch: mean over videos of the precision of their top-n (n = #labels; 0 without labels)."""
  predictions, actuals = _as_batch(predictions, actuals)
  perr = _video_stats(predictions, actuals, 1)[4]
  return float(perr.mean()) if perr.size else 0.0


def top_k_by_class(predictions, labels, k=20):
  """Each video's top-k entries, regrouped by class (the input of MeanAveragePrecisionCalculator).

  Returns (per-class score arrays, per-class 0/1 label arrays, per-class total positives [C]); the
  totals count every label, also those outside the top k.
  """
  predictions, labels = _as_batch(predictions, labels)
  num_class = predictions.shape[1]
  if k <= 0:
    raise ValueError("k must be a positive integer, got %r" % (k,))
  top = _top_columns(predictions, k)
  scores = np.take_along_axis(predictions, top, axis=1).ravel()
  hits = np.take_along_axis(labels, top, axis=1).ravel()
  classes = top.ravel()
  grouping = np.argsort(classes, kind="stable")
  bounds = np.cumsum(np.bincount(classes, minlength=num_class))[:-1]
  return (np.split(scores[grouping], bounds), np.split(hits[grouping].astype(np.int64), bounds),
          np.count_nonzero(labels, axis=0))


def _gap_of_pool(scores, hits, total_positives):
  return ap_from_ranked_hits(hits[ranked_order(scores)], total_positives)


def calculate_gap(predictions, actuals, top_k=20):
  """GAP@top_k of one batch (see the module docstring)."""
  predictions, actuals = _as_batch(predictions, actuals)
  if top_k <= 0:
    raise ValueError("top_k must be a positive integer, got %r" % (top_k,))
  top = _top_columns(predictions, top_k)
  return _gap_of_pool(np.take_along_axis(predictions, top, axis=1).ravel(),
                      np.take_along_axis(actuals, top, axis=1).ravel(),
                      int(np.count_nonzero(actuals)))


class EvaluationMetrics(object):
  """Streaming Hit@1, PERR, GAP@top_k, mAP and loss over batches, starter interface.

  top_n limits each class's AP to its first top_n pooled entries (denominator min(P_c, top_n)); GAP
  always uses the full pooled list, as in the starter.
  """

  def __init__(self, num_class, top_k, top_n=None):
    if num_class <= 0 or top_k <= 0:
      raise ValueError("num_class and top_k must be positive, got %r and %r" % (num_class, top_k))
    self.num_class = int(num_class)
    self.top_k = int(top_k)
    self.top_n = top_n
    self._class_dtype = np.int16 if self.num_class <= np.iinfo(np.int16).max else np.int32
    self.clear()

  def clear(self):
    """Forgets everything accumulated."""
    self._scores, self._hits, self._classes = [], [], []
    self._positives = np.zeros(self.num_class, np.int64)
    self._sum_hit_at_one = 0
    self._sum_perr = 0.0
    self._sum_loss = 0.0
    self.num_examples = 0

  def accumulate(self, predictions, labels, loss):
    """Adds a batch. loss: the batch's mean loss (or per-video losses). Returns this batch's
    {"hit_at_one", "perr", "loss"}."""
    predictions, labels = _as_batch(predictions, labels)
    if predictions.shape[1] != self.num_class:
      raise ValueError("expected %d classes, got %d" % (self.num_class, predictions.shape[1]))
    videos = len(predictions)
    loss = float(np.mean(loss))
    if videos == 0:
      return {"hit_at_one": 0.0, "perr": 0.0, "loss": loss}
    top, hits, _, hit_at_one, perr = _video_stats(predictions, labels, self.top_k)
    self._scores.append(np.take_along_axis(predictions, top, axis=1).ravel())
    self._hits.append(hits.ravel())
    self._classes.append(top.astype(self._class_dtype).ravel())
    self._positives += np.count_nonzero(labels, axis=0)
    self._sum_hit_at_one += int(np.count_nonzero(hit_at_one))
    self._sum_perr += float(perr.sum())
    self._sum_loss += loss * videos
    self.num_examples += videos
    return {"hit_at_one": float(np.mean(hit_at_one)),
            "perr": float(perr.mean()), "loss": loss}

  def get(self):
    """Metrics over everything accumulated: avg_hit_at_one, avg_perr, avg_loss (example-weighted),
    aps (per class, 0.0 for classes without positives), map, gap, num_examples."""
    if self.num_examples <= 0:
      raise ValueError("no examples were accumulated")
    scores = np.concatenate(self._scores)
    order = ranked_order(scores)
    hits = np.concatenate(self._hits)[order]
    classes = np.concatenate(self._classes)[order]
    aps = grouped_ap(hits, classes, self._positives, self.top_n)
    present = self._positives > 0
    return {"avg_hit_at_one": self._sum_hit_at_one / float(self.num_examples),
            "avg_perr": self._sum_perr / self.num_examples,
            "avg_loss": self._sum_loss / self.num_examples,
            "aps": aps.tolist(),
            "map": float(aps[present].mean()) if present.any() else 0.0,
            "gap": ap_from_ranked_hits(hits, int(self._positives.sum())),
            "num_examples": self.num_examples}
