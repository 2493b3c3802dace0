"""Metrics (average_precision, mean_average_precision_calculator, eval_util) against brute-force
references written here with plain Python loops and sorts.

Ties: where the order of tied scores matters, the vectorised result is checked to lie between the
reference with positives ranked first among ties (best case) and with negatives first (worst case);
exact agreement is checked on tie-free data.
"""

import numpy as np
import pytest

import eval_util
from average_precision import AveragePrecisionCalculator, ranked_order
from mean_average_precision_calculator import MeanAveragePrecisionCalculator

TOL = 1e-9


# ---------------------------------------------------------------- brute-force references (loops)

def ref_ap(scores, labels, total_positives=None, n=None, ties="stable"):
  """AP by walking a Python-sorted list. ties: 'stable' (input order), 'best' or 'worst'."""
  pairs = [(float(s), 1 if l > 0 else 0) for s, l in zip(scores, labels)]
  if ties == "best":
    pairs.sort(key=lambda pair: (-pair[0], -pair[1]))
  elif ties == "worst":
    pairs.sort(key=lambda pair: (-pair[0], pair[1]))
  else:
    pairs.sort(key=lambda pair: -pair[0])
  positives = sum(label for _, label in pairs) if total_positives is None else total_positives
  if n is not None:
    positives = min(positives, n)
    pairs = pairs[:n]
  if positives == 0:
    return 0.0
  found, total = 0, 0.0
  for rank, (_, label) in enumerate(pairs, start=1):
    if label:
      found += 1
      total += found / rank
  return total / positives


def ref_metrics(predictions, labels, k=20, top_n=None, ties="stable"):
  """All metrics by looping over videos and classes; per-video order: score desc, then class index."""
  videos, num_class = len(predictions), len(predictions[0])
  pool, per_class = [], [[] for _ in range(num_class)]
  positives = [0] * num_class
  hits_at_one, perrs = [], []
  for i in range(videos):
    row, label_row = [float(x) for x in predictions[i]], [int(x > 0) for x in labels[i]]
    ranked = sorted(range(num_class), key=lambda c: -row[c])
    n = sum(label_row)
    hits_at_one.append(label_row[ranked[0]])
    perrs.append(sum(label_row[c] for c in ranked[:n]) / n if n else 0.0)   # the starter's: 0 unlabelled
    for c in ranked[:k]:
      pool.append((row[c], label_row[c]))
      per_class[c].append((row[c], label_row[c]))
    for c in range(num_class):
      positives[c] += label_row[c]
  gap = ref_ap([s for s, _ in pool], [l for _, l in pool], sum(positives), ties=ties)
  aps = []
  for c in range(num_class):
    if positives[c]:
      aps.append(ref_ap([s for s, _ in per_class[c]], [l for _, l in per_class[c]], positives[c],
                        n=top_n, ties=ties))
    else:
      aps.append(0.0)
  present = [ap for ap, p in zip(aps, positives) if p]
  return {"avg_hit_at_one": sum(hits_at_one) / videos,
          "avg_perr": sum(perrs) / videos,
          "gap": gap, "aps": aps, "map": sum(present) / len(present) if present else 0.0}


def random_batch(videos, num_class, seed, decimals=None, labels_per_video=3, empty_fraction=0.0):
  """Scores in [0, 1] (optionally rounded: ties) with labels nudged up, and 0/1 labels."""
  rng = np.random.RandomState(seed)
  labels = np.zeros((videos, num_class), np.float32)
  for i in range(videos):
    if rng.rand() >= empty_fraction:
      count = rng.randint(1, labels_per_video * 2)
      labels[i, rng.choice(num_class, min(count, num_class), replace=False)] = 1
  scores = np.clip(rng.rand(videos, num_class) * 0.8 + 0.3 * labels * rng.rand(videos, num_class), 0, 1)
  if decimals is not None:
    scores = np.round(scores, decimals)
  return scores, labels


def assert_close(result, reference, keys=("avg_hit_at_one", "avg_perr", "gap", "map")):
  for key in keys:
    assert result[key] == pytest.approx(reference[key], abs=TOL), key
  np.testing.assert_allclose(result["aps"], reference["aps"], atol=TOL)


# ---------------------------------------------------------------- average_precision

def test_hand_checked_vectors():
  ap = AveragePrecisionCalculator.ap
  assert round(ap([0.98, 0.88, 0.77, 0.65, 0.64, 0.59, 0.45, 0.43, 0.20, 0.05],
                  [1, 1, 0, 0, 0, 1, 1, 0, 0, 1]), 3) == 0.714
  assert round(ap([0.878, 0.832, 0.759, 0.621, 0.458, 0.285, 0.134], [1, 0, 1, 0, 0, 1, 0]), 3) == 0.722
  assert ap([0.3], [1]) == 1.0
  assert ap([0.3], [0]) == 0.0
  assert ap([], []) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_ap_matches_reference_tie_free(seed):
  rng = np.random.RandomState(seed)
  scores, labels = rng.rand(300), (rng.rand(300) < 0.2).astype(int)
  for n in (None, 1, 7, 50, 1000):
    for extra in (0, 13):
      total = int(labels.sum()) + extra
      assert AveragePrecisionCalculator.ap_at_n(scores, labels, n, total) == pytest.approx(
          ref_ap(scores, labels, total, n), abs=TOL)


@pytest.mark.parametrize("seed", range(5))
def test_ap_with_ties_lies_between_best_and_worst_orders(seed):
  rng = np.random.RandomState(seed)
  scores, labels = np.round(rng.rand(400), 1), (rng.rand(400) < 0.3).astype(int)
  value = AveragePrecisionCalculator.ap(scores, labels)
  assert ref_ap(scores, labels, ties="worst") - TOL <= value <= ref_ap(scores, labels, ties="best") + TOL
  assert value == AveragePrecisionCalculator.ap(scores, labels)      # reproducible


def test_ties_do_not_favour_either_label():
  labels = np.zeros(20000, int)
  labels[::4] = 1                                  # 25% positives in input order, first item positive
  for first in (labels, labels[::-1]):
    value = AveragePrecisionCalculator.ap(np.full(first.size, 0.5), first)
    assert value == pytest.approx(0.25, abs=0.02)  # AP of a random order is about the base rate


def test_ranked_order_is_descending_and_reproducible():
  scores = np.round(np.random.RandomState(0).rand(1000), 1)
  order = ranked_order(scores)
  assert sorted(order.tolist()) == list(range(1000))
  assert np.all(np.diff(scores[order]) <= 0)
  assert np.array_equal(order, ranked_order(scores))


def test_ap_calculator_streaming_and_top_n():
  rng = np.random.RandomState(1)
  scores, labels = rng.rand(500), (rng.rand(500) < 0.1).astype(int)
  for top_n in (None, 1, 25):
    calc = AveragePrecisionCalculator(top_n)
    for start in range(0, 500, 64):
      calc.accumulate(scores[start:start + 64], labels[start:start + 64])
    assert calc.num_accumulated_positives == labels.sum()
    assert calc.peek_ap_at_n() == pytest.approx(ref_ap(scores, labels, n=top_n), abs=TOL)
    if top_n:
      assert calc.heap_size == top_n
    calc.clear()
    assert calc.num_accumulated_positives == 0 and calc.peek_ap_at_n() == 0.0


def test_ap_calculator_counts_missing_positives():
  calc = AveragePrecisionCalculator()
  calc.accumulate([0.9, 0.8], [1, 0], num_positives=3)     # two positives never scored
  calc.accumulate([0.7], [1])
  assert calc.num_accumulated_positives == 4
  assert calc.peek_ap_at_n() == pytest.approx((1 + 2 / 3) / 4)


def test_ap_input_errors():
  with pytest.raises(ValueError):
    AveragePrecisionCalculator.ap([0.1, 0.2], [1])
  with pytest.raises(ValueError):
    AveragePrecisionCalculator.ap_at_n([0.1], [1], n=0)
  with pytest.raises(ValueError):
    AveragePrecisionCalculator.ap_at_n([0.1, 0.2], [1, 1], n=None, total_num_positives=1)
  with pytest.raises(ValueError):
    AveragePrecisionCalculator().accumulate([0.1], [1], num_positives=0)
  with pytest.raises(ValueError):
    AveragePrecisionCalculator(top_n=-1)


def test_shuffle_keeps_pairs_together():
  predictions, actuals = AveragePrecisionCalculator._shuffle(np.arange(50.0), np.arange(50) % 2)
  assert sorted(predictions.tolist()) == list(range(50))
  assert np.array_equal(predictions.astype(int) % 2, actuals)


# ---------------------------------------------------------------- mean_average_precision_calculator

def test_map_calculator_excludes_empty_classes():
  calc = MeanAveragePrecisionCalculator(3)
  assert calc.is_empty()
  calc.accumulate([[0.9, 0.1], [0.5], []], [[1, 0], [0], []])
  assert not calc.is_empty()
  assert calc.peek_map_at_n() == [1.0, 0.0, 0.0]
  assert calc.peek_map() == 1.0                                  # classes 1 and 2 have no positive
  unfiltered = MeanAveragePrecisionCalculator(3, filter_empty_classes=False)
  unfiltered.accumulate([[0.9, 0.1], [0.5], []], [[1, 0], [0], []])
  assert unfiltered.peek_map() == pytest.approx(1 / 3)
  calc.accumulate([[], [], [0.2]], [[], [], [0]], num_positives=[0, 0, 2])   # class 2: never hit
  assert calc.peek_map_at_n() == [1.0, 0.0, 0.0] and calc.peek_map() == 0.5
  calc.clear()
  assert calc.is_empty() and calc.peek_map_at_n() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("top_n", [None, 3])
def test_map_calculator_matches_reference(top_n):
  rng = np.random.RandomState(2)
  num_class = 6
  calc = MeanAveragePrecisionCalculator(num_class, top_n=top_n)
  pooled = [([], []) for _ in range(num_class)]
  for _ in range(3):
    scores = [rng.rand(rng.randint(0, 12)) for _ in range(num_class)]
    labels = [(rng.rand(len(s)) < 0.4).astype(int) for s in scores]
    calc.accumulate(scores, labels)
    for c in range(num_class):
      pooled[c][0].extend(scores[c])
      pooled[c][1].extend(labels[c])
  expected = [ref_ap(s, l, n=top_n) for s, l in pooled]
  np.testing.assert_allclose(calc.peek_map_at_n(), expected, atol=TOL)


def test_map_calculator_input_errors():
  with pytest.raises(ValueError):
    MeanAveragePrecisionCalculator(0)
  calc = MeanAveragePrecisionCalculator(2)
  with pytest.raises(ValueError):
    calc.accumulate([[0.1]], [[1]])
  with pytest.raises(ValueError):
    calc.accumulate([[0.1], [0.2]], [[1], []])
  with pytest.raises(ValueError):
    calc.accumulate([[0.1], [0.2]], [[1], [1]], num_positives=[0, 1])


# ---------------------------------------------------------------- eval_util

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_class", [12, 600])     # 600 classes: the grouped-bound selection path
def test_top_columns_matches_python_sort(num_class, dtype):
  for decimals in (None, 2):
    scores, _ = random_batch(40, num_class, seed=num_class, decimals=decimals)
    scores = scores.astype(dtype)
    scores[0, :30] = -scores[0, :30]                 # negative scores and signed zeros sort correctly
    scores[1, :5] = -0.0
    scores[2] = -scores[2]                           # a row of negative scores only
    scores[3] = 0.0                                  # a row of ties, half of them -0.0
    scores[3, ::2] = -0.0
    for k in (1, 5, 20):
      top = eval_util._top_columns(scores, k)
      expected = [sorted(range(num_class), key=lambda c: -row[c])[:k] for row in scores.tolist()]
      assert top.tolist() == expected


def test_row_then_descending_order_float32_key_matches_lexsort():
  rng = np.random.RandomState(4)
  rows = np.sort(rng.randint(0, 50, 2000))
  values = np.round(rng.randn(2000), 1).astype(np.float32)
  values[::7] = -0.0
  values[::11] = 0.0
  expected = np.lexsort((-values.astype(np.float64), rows))
  assert np.array_equal(eval_util._row_then_descending_order(rows, values), expected)


def test_top_columns_with_massive_ties_uses_fallback():
  top = eval_util._top_columns(np.full((3, 700), 0.5, np.float32), 4)
  assert top.tolist() == [[0, 1, 2, 3]] * 3


@pytest.mark.parametrize("num_class,top_k,top_n", [(15, 5, None), (40, 20, None), (40, 3, 4),
                                                   (600, 20, None)])
def test_evaluation_metrics_match_reference_tie_free(num_class, top_k, top_n):
  scores, labels = random_batch(120, num_class, seed=num_class + top_k, empty_fraction=0.1)
  metrics = eval_util.EvaluationMetrics(num_class, top_k, top_n)
  metrics.accumulate(scores, labels, 0.0)
  result = metrics.get()
  assert_close(result, ref_metrics(scores, labels, top_k, top_n))
  assert result["num_examples"] == 120 and len(result["aps"]) == num_class
  assert eval_util.calculate_gap(scores, labels, top_k) == pytest.approx(result["gap"], abs=TOL)
  assert eval_util.calculate_hit_at_one(scores, labels) == result["avg_hit_at_one"]
  assert eval_util.calculate_precision_at_equal_recall_rate(scores, labels) == pytest.approx(
      result["avg_perr"], abs=TOL)


@pytest.mark.parametrize("seed", range(3))
def test_evaluation_metrics_with_ties_between_best_and_worst(seed):
  scores, labels = random_batch(150, 30, seed=seed, decimals=1)
  metrics = eval_util.EvaluationMetrics(30, 10)
  metrics.accumulate(scores, labels, 0.0)
  result = metrics.get()
  best, worst = ref_metrics(scores, labels, 10, ties="best"), ref_metrics(scores, labels, 10, ties="worst")
  for key in ("gap", "map"):
    assert worst[key] - TOL <= result[key] <= best[key] + TOL
  assert np.all(np.array(worst["aps"]) - TOL <= result["aps"])
  assert np.all(np.array(result["aps"]) <= np.array(best["aps"]) + TOL)
  # Per-video selections break ties by class index, like the reference's stable sort.
  assert result["avg_hit_at_one"] == pytest.approx(best["avg_hit_at_one"])
  assert result["avg_perr"] == pytest.approx(best["avg_perr"])


def test_streaming_equals_single_batch():
  scores, labels = random_batch(200, 50, seed=7, decimals=1, empty_fraction=0.1)   # ties included
  whole = eval_util.EvaluationMetrics(50, 20)
  whole.accumulate(scores, labels, 1.0)
  streamed = eval_util.EvaluationMetrics(50, 20)
  for start, stop in ((0, 1), (1, 64), (64, 65), (65, 200)):
    batch = streamed.accumulate(scores[start:stop], labels[start:stop], 1.0)
    assert set(batch) == {"hit_at_one", "perr", "loss"}
  a, b = whole.get(), streamed.get()
  for key in ("avg_hit_at_one", "avg_perr", "avg_loss", "gap", "map", "num_examples"):
    assert a[key] == pytest.approx(b[key], abs=1e-12), key
  np.testing.assert_allclose(a["aps"], b["aps"], atol=1e-12)


def test_memory_is_top_k_per_video():
  metrics = eval_util.EvaluationMetrics(600, 20)
  for seed in range(3):
    metrics.accumulate(*random_batch(50, 600, seed=seed), loss=0.0)
  assert sum(s.size for s in metrics._scores) == 150 * 20
  assert metrics._classes[0].dtype == np.int16


def test_matches_map_calculator_fed_by_top_k_by_class():
  num_class = 25
  metrics = eval_util.EvaluationMetrics(num_class, 5)
  calc = MeanAveragePrecisionCalculator(num_class)
  for seed in range(3):
    scores, labels = random_batch(40, num_class, seed=seed)
    metrics.accumulate(scores, labels, 0.0)
    per_class_scores, per_class_labels, positives = eval_util.top_k_by_class(scores, labels, 5)
    assert len(per_class_scores) == num_class and sum(len(s) for s in per_class_scores) == 40 * 5
    assert np.array_equal(positives, labels.sum(axis=0))
    calc.accumulate(per_class_scores, per_class_labels, positives)
  result = metrics.get()
  np.testing.assert_allclose(calc.peek_map_at_n(), result["aps"], atol=TOL)
  assert calc.peek_map() == pytest.approx(result["map"], abs=TOL)


def test_classes_without_positives_are_left_out_of_map():
  scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.6]])
  labels = np.array([[1, 0, 0], [0, 0, 1]])                     # class 1 never positive
  metrics = eval_util.EvaluationMetrics(3, 2)
  metrics.accumulate(scores, labels, 0.0)
  result = metrics.get()
  # class 0: entries 0.9(+), 0.2(-) -> 1; class 2: entry 0.6(+) -> 1 ; class 1 is ignored, AP 0.
  assert result["aps"] == [1.0, 0.0, 1.0]
  assert result["map"] == 1.0


def test_videos_without_labels():
  scores = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.5, 0.4, 0.3], [0.3, 0.2, 0.1]])
  labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0], [0, 0, 0]])
  metrics = eval_util.EvaluationMetrics(3, 20)
  batch = metrics.accumulate(scores, labels, 0.5)
  result = metrics.get()
  assert batch["hit_at_one"] == result["avg_hit_at_one"] == 0.5   # unlabelled videos: misses
  assert batch["perr"] == result["avg_perr"] == 0.375   # (1 + 1/2 + 0 + 0) / 4: unlabelled count 0
  assert eval_util.calculate_hit_at_one(scores, labels) == 0.5
  assert eval_util.calculate_precision_at_equal_recall_rate(scores, labels) == 0.375
  empty = eval_util.EvaluationMetrics(3, 20)
  assert empty.accumulate(scores[2:], labels[2:], 0.0) == {"hit_at_one": 0.0, "perr": 0.0, "loss": 0.0}
  assert empty.get()["avg_perr"] == 0.0 and empty.get()["gap"] == 0.0 and empty.get()["map"] == 0.0


def test_top_k_smaller_than_number_of_labels():
  scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
  labels = np.array([[1, 1, 0, 1, 1, 1]])
  # Top 2 are both hits, three positives lie outside: GAP = (1/1 + 2/2) / 5.
  assert eval_util.calculate_gap(scores, labels, top_k=2) == pytest.approx(0.4)
  metrics = eval_util.EvaluationMetrics(6, 1)
  metrics.accumulate(scores, labels, 0.0)
  result = metrics.get()
  assert result["gap"] == pytest.approx(0.2)
  assert result["avg_perr"] == pytest.approx(4 / 5)      # PERR looks at the top 5, whatever top_k is
  assert result["aps"] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0] and result["map"] == pytest.approx(0.2)


def test_num_examples_and_example_weighted_loss():
  metrics = eval_util.EvaluationMetrics(10, 20)
  scores, labels = random_batch(10, 10, seed=3)
  assert metrics.accumulate(scores[:3], labels[:3], 1.0)["loss"] == 1.0
  assert metrics.accumulate(scores[3:], labels[3:], np.full(7, 2.0))["loss"] == 2.0
  result = metrics.get()
  assert result["num_examples"] == 10
  assert result["avg_loss"] == pytest.approx((3 * 1.0 + 7 * 2.0) / 10)
  metrics.clear()
  with pytest.raises(ValueError):
    metrics.get()


def test_float32_and_float64_inputs_agree():
  scores, labels = random_batch(80, 600, seed=5)
  results = []
  for dtype in (np.float32, np.float64):
    metrics = eval_util.EvaluationMetrics(600, 20)
    metrics.accumulate(scores.astype(np.float32).astype(dtype), labels.astype(bool), 0.0)
    results.append(metrics.get())
  assert_close(results[0], results[1])


def test_eval_util_input_errors():
  metrics = eval_util.EvaluationMetrics(4, 20)
  with pytest.raises(ValueError):
    metrics.accumulate(np.zeros((2, 4)), np.zeros((2, 3)), 0.0)
  with pytest.raises(ValueError):
    metrics.accumulate(np.zeros((2, 3)), np.zeros((2, 3)), 0.0)
  with pytest.raises(ValueError):
    eval_util.calculate_gap(np.zeros(4), np.zeros(4))
