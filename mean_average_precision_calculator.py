"""Per-class average precision and its mean (mAP), computed for all classes at once.

Entries of every class are pooled into flat arrays with a class id; `grouped_ap` ranks each class's
entries by score with one global sort followed by a stable sort on class id, so there is no Python loop
over classes. Per class: AP over that class's entries divided by that class's total positives; the mean
is taken over classes with at least one positive (docs/BACKGROUND.md, Metrics).
"""

import numbers

import numpy as np

from average_precision import ranked_order


def grouped_ap(ranked_hits, ranked_classes, positives_per_class, top_n=None):
  """Per-class AP from entries already in descending score order (ties already randomised).

  ranked_hits: bool [N]; ranked_classes: int [N] in [0, C); positives_per_class: [C] totals (P_c).
  With top_n, only each class's first top_n ranks count and its denominator is min(P_c, top_n).
  Returns float64 [C]; classes with P_c == 0 get 0.0.
  """
  positives = np.asarray(positives_per_class, dtype=np.float64)
  num_class = positives.size
  ranked_hits = np.asarray(ranked_hits, dtype=bool)
  ranked_classes = np.asarray(ranked_classes)
  # Stable sort by class keeps the score order inside each class.
  grouping = np.argsort(ranked_classes, kind="stable")
  classes = ranked_classes[grouping]
  hit_positions = np.flatnonzero(ranked_hits[grouping])
  hit_classes = classes[hit_positions].astype(np.intp)
  entries = np.bincount(classes, minlength=num_class)
  hits = np.bincount(hit_classes, minlength=num_class)
  rank = hit_positions - (np.cumsum(entries) - entries)[hit_classes] + 1      # 1-based, within class
  nth_hit = np.arange(1, hit_positions.size + 1) - (np.cumsum(hits) - hits)[hit_classes]
  precision = nth_hit / rank.astype(np.float64)
  denominator = positives
  if top_n is not None:
    inside = rank <= top_n
    precision, hit_classes = precision[inside], hit_classes[inside]
    denominator = np.minimum(positives, top_n)
  sums = np.bincount(hit_classes, weights=precision, minlength=num_class)
  return np.where(denominator > 0, sums / np.maximum(denominator, 1), 0.0)


class MeanAveragePrecisionCalculator(object):
  """Accumulates per-class (score, label) lists over batches; reports per-class AP and mAP.

  filter_empty_classes: classes with no accumulated positive are left out of `peek_map()` (they get AP
  0.0 in `peek_map_at_n()`); with False the mean is over all classes. top_n: score only each class's
  top_n ranks (denominator min(P_c, top_n)); all entries are stored, the caller bounds them (eval_util
  passes each video's top 20 only).
  """

  def __init__(self, num_class, filter_empty_classes=True, top_n=None):
    if not isinstance(num_class, numbers.Integral) or num_class <= 0:
      raise ValueError("num_class must be a positive integer, got %r" % (num_class,))
    if top_n is not None and (not isinstance(top_n, numbers.Integral) or top_n <= 0):
      raise ValueError("top_n must be a positive integer or None, got %r" % (top_n,))
    self._num_class = int(num_class)
    self._filter_empty_classes = filter_empty_classes
    self._top_n = top_n
    self.clear()

  @property
  def num_class(self):
    return self._num_class

  @property
  def num_positives_per_class(self):
    """Accumulated positives of each class (int64 [num_class])."""
    return self._positives.copy()

  def clear(self):
    """Forgets everything accumulated."""
    self._scores, self._hits, self._classes = [], [], []
    self._positives = np.zeros(self._num_class, np.int64)

  def is_empty(self):
    """True when no entry and no positive has been accumulated."""
    return not self._scores and not self._positives.any()

  def accumulate(self, predictions, actuals, num_positives=None):
    """Adds one batch given as per-class lists (length num_class) of 1-D scores and 0/1 labels.

    num_positives: per-class positives of the batch, including ones missing from the lists (e.g.
      outside a video's top 20); defaults to the positives in `actuals`.
    """
    if len(predictions) != self._num_class or len(actuals) != self._num_class:
      raise ValueError("predictions and actuals must be lists of length num_class=%d, got %d and %d"
                       % (self._num_class, len(predictions), len(actuals)))
    lengths = np.array([np.size(p) for p in predictions], dtype=np.int64)
    if not np.array_equal(lengths, [np.size(a) for a in actuals]):
      raise ValueError("each class's predictions and actuals must have the same length")
    scores = np.concatenate([np.ravel(p) for p in predictions]).astype(np.float64)
    hits = np.concatenate([np.ravel(a) for a in actuals]) > 0
    classes = np.repeat(np.arange(self._num_class, dtype=np.int32), lengths)
    present = np.bincount(classes[hits], minlength=self._num_class)
    if num_positives is None:
      num_positives = present
    num_positives = np.asarray(num_positives, dtype=np.int64).ravel()
    if num_positives.shape != (self._num_class,):
      raise ValueError("num_positives must have num_class=%d entries" % self._num_class)
    if np.any(num_positives < present):
      raise ValueError("num_positives is smaller than the positives present for some class")
    self._add(scores, hits, classes, num_positives)

  def _add(self, scores, hits, classes, num_positives):
    """Pooled form of accumulate: flat scores, bool hits, class ids and per-class positive totals."""
    if scores.size:
      self._scores.append(scores)
      self._hits.append(hits)
      self._classes.append(classes)
    self._positives += num_positives

  def peek_map_at_n(self):
    """Per-class AP (list of num_class floats) of everything accumulated so far."""
    if not self._scores:
      return [0.0] * self._num_class
    scores = np.concatenate(self._scores)
    order = ranked_order(scores)
    aps = grouped_ap(np.concatenate(self._hits)[order], np.concatenate(self._classes)[order],
                     self._positives, self._top_n)
    return aps.tolist()

  def peek_map(self):
    """mAP: mean of the per-class APs over classes with a positive (all classes without filtering)."""
    aps = np.asarray(self.peek_map_at_n())
    if self._filter_empty_classes:
      aps = aps[self._positives > 0]
    return float(aps.mean()) if aps.size else 0.0

  mean_ap = peek_map
