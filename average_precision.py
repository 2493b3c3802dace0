"""Non-interpolated average precision (AP), vectorised with NumPy.

AP of a ranked list = sum over the positives in the list of (precision at that positive's rank), divided
by the total number of positives P. P may be larger than the number of positives in the list (positives
that were never scored still count), which is how GAP@20 works (docs/BACKGROUND.md, Metrics).

Ties in score must not favour positives or negatives: items are put in a fixed-seed random order and
then stably sorted by descending score, so tied items end up in a reproducible random order.
"""

import numbers

import numpy as np

TIE_SEED = 0


def ranked_order(scores, seed=TIE_SEED):
  """Indices that sort `scores` (1-D) descending, ties in a seeded random order (reproducible)."""
  scores = np.asarray(scores).ravel()
  permutation = np.random.default_rng(seed).permutation(scores.size)
  return permutation[np.argsort(-scores[permutation], kind="stable")]


def ap_from_ranked_hits(ranked_hits, num_positives, n=None):
  """AP of a boolean hit vector that is already in rank order.

  Only the first `n` ranks are scored when `n` is given, and the denominator becomes min(P, n) so a
  perfect top-n scores 1 (the starter's AP@n). Returns 0.0 when there are no positives.
  """
  denominator = num_positives if n is None else min(num_positives, n)
  if denominator <= 0:
    return 0.0
  hit_ranks = np.flatnonzero(ranked_hits)  # 0-based rank of each positive
  if n is not None:
    hit_ranks = hit_ranks[hit_ranks < n]
  precisions = np.arange(1, hit_ranks.size + 1, dtype=np.float64) / (hit_ranks + 1)
  return float(precisions.sum() / denominator)


def _check_n(n):
  if n is not None and (not isinstance(n, numbers.Integral) or isinstance(n, bool) or n <= 0):
    raise ValueError("n must be a positive integer or None, got %r" % (n,))


def _as_pair(predictions, actuals):
  """1-D float scores and boolean positives (label > 0), with a length check."""
  predictions = np.asarray(predictions, dtype=np.float64).ravel()
  actuals = np.asarray(actuals).ravel() > 0
  if predictions.shape != actuals.shape:
    raise ValueError("predictions and actuals must have the same length, got %d and %d"
                     % (predictions.size, actuals.size))
  return predictions, actuals


def _check_positives(num_positives, present):
  if num_positives < present:
    raise ValueError("num_positives (%s) is smaller than the %d positives in actuals"
                     % (num_positives, present))


class AveragePrecisionCalculator(object):
  """Accumulates (score, label) pairs over batches and computes AP (at `top_n` if given).

  With `top_n`, only pairs that can still reach the top `top_n` are kept: after each batch, pairs
  scoring below the top_n-th score are dropped (all pairs tied with it are kept, so no tie is decided
  early). The positive count keeps every positive seen, including dropped ones.
  """

  def __init__(self, top_n=None):
    _check_n(top_n)
    self._top_n = top_n
    self.clear()

  @property
  def top_n(self):
    return self._top_n

  @property
  def num_accumulated_positives(self):
    """Total positives seen so far (what AP divides by)."""
    return self._total_positives

  @property
  def heap_size(self):
    """Number of pairs currently kept (the starter's name)."""
    return int(self._scores.size)

  def clear(self):
    """Forgets everything accumulated."""
    self._scores = np.zeros(0, np.float64)
    self._actuals = np.zeros(0, bool)
    self._total_positives = 0

  def accumulate(self, predictions, actuals, num_positives=None):
    """Adds a batch of scores and 0/1 labels.

    num_positives: positives of this batch, including ones absent from `predictions` (e.g. outside a
      video's top 20); defaults to the positives in `actuals`. Must be >= those.
    """
    predictions, actuals = _as_pair(predictions, actuals)
    present = int(np.count_nonzero(actuals))
    if num_positives is None:
      num_positives = present
    _check_positives(num_positives, present)
    self._total_positives += int(num_positives)
    self._scores = np.concatenate([self._scores, predictions])
    self._actuals = np.concatenate([self._actuals, actuals])
    if self._top_n is not None and self._scores.size > self._top_n:
      threshold = np.partition(self._scores, self._scores.size - self._top_n)[-self._top_n]
      keep = self._scores >= threshold
      self._scores, self._actuals = self._scores[keep], self._actuals[keep]

  def peek_ap_at_n(self):
    """AP (at top_n) of everything accumulated so far; 0.0 when nothing positive was seen."""
    if self._scores.size == 0:
      return 0.0
    return self.ap_at_n(self._scores, self._actuals, n=self._top_n,
                        total_num_positives=self._total_positives)

  @staticmethod
  def ap(predictions, actuals):
    """Non-interpolated AP of the whole list, denominator = positives in `actuals`."""
    return AveragePrecisionCalculator.ap_at_n(predictions, actuals, n=None)

  @staticmethod
  def ap_at_n(predictions, actuals, n=20, total_num_positives=None):
    """AP over the top `n` ranks (all ranks when n is None).

    total_num_positives: P, defaults to the positives in `actuals`; the denominator is min(P, n).
    """
    _check_n(n)
    predictions, actuals = _as_pair(predictions, actuals)
    present = int(np.count_nonzero(actuals))
    if total_num_positives is None:
      total_num_positives = present
    _check_positives(total_num_positives, present)
    if predictions.size == 0:
      return 0.0
    return ap_from_ranked_hits(actuals[ranked_order(predictions)], total_num_positives, n)

  @staticmethod
  def _shuffle(predictions, actuals, seed=TIE_SEED):
    """The two arrays in the same fixed-seed random order (the starter's pre-sort shuffle).

    `ranked_order` applies this permutation internally; kept for callers of the starter API.
    """
    predictions, actuals = np.asarray(predictions), np.asarray(actuals)
    permutation = np.random.default_rng(seed).permutation(predictions.size)
    return predictions.ravel()[permutation], actuals.ravel()[permutation]

  @staticmethod
  def _zero_one_normalize(predictions, epsilon=1e-7):
    """Min-max scales scores to [0, 1] (does not change the ranking, hence not the AP)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    low, high = predictions.min(), predictions.max()
    return (predictions - low) / max(high - low, epsilon)
