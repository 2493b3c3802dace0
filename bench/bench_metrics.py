"""Streaming evaluation-metric benchmark: eval_util.EvaluationMetrics on YouTube-8M-sized output
(default 1,000,000 videos x 3862 classes, batches of 10,000), then a pure-Python heap/sort
implementation of the same definitions against the vectorised one on a smaller set.

  .venv/bin/python bench/bench_metrics.py [--num_videos 1000000] [--num_classes 3862]
      [--batch_size 10000] [--python_videos 20000]

Data: uniform scores plus a bonus on true labels (so GAP is not trivial), ~3 labels per video drawn
from a Zipf-like class frequency (YT8M-like). Only the metric calls are timed for the metric numbers;
data generation is timed separately. Memory: process max RSS (includes the generated batches), the
bytes EvaluationMetrics holds, and tracemalloc peaks of the accumulate phase and of get().
"""

import argparse
import heapq
import os
import random
import resource
import sys
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import eval_util  # noqa: E402
import utils  # noqa: E402

LABEL_COUNT_PROBS = np.array([24.7, 22.5, 18.6, 15.6, 8.8, 4.6, 2.5, 1.3, 1.4])  # 1..9 labels


def make_batch(rng, videos, num_classes, class_probs, buffers=None):
  """Scores float32 [videos, classes] and dense 0/1 labels float32, written into `buffers` (a reused
  (scores, labels) pair, to keep page faults out of the timings) when given."""
  counts = rng.choice(np.arange(1, 10), size=videos, p=LABEL_COUNT_PROBS / LABEL_COUNT_PROBS.sum())
  rows = np.repeat(np.arange(videos), counts)
  cols = rng.choice(num_classes, size=rows.size, p=class_probs)
  if buffers is None or len(buffers[0]) < videos:
    buffers = (np.empty((videos, num_classes), np.float32), np.empty((videos, num_classes), np.float32))
  scores, labels = buffers[0][:videos], buffers[1][:videos]
  labels.fill(0.0)
  labels[rows, cols] = 1.0                     # duplicates merge: slightly under 3 labels/video
  rng.random(dtype=np.float32, out=scores)
  scores *= np.float32(0.7)
  scores[rows, cols] += rng.random(rows.size, dtype=np.float32) * np.float32(0.3)
  return scores, labels, buffers


def max_rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ------------------------------------------------------------------ pure-Python reference

def python_metrics(batches, top_k=20):
  """Same definitions with heapq per video and Python sorts (the starter's style of computation)."""
  pool, per_class = [], {}
  positives = {}
  hits, perr_sum, perr_videos, videos = 0, 0.0, 0, 0
  convert_seconds = 0.0
  for scores, labels in batches:
    for score_array, label_array in zip(scores, labels):
      start = time.perf_counter()
      score_row, label_row = score_array.tolist(), label_array.tolist()   # one video at a time
      convert_seconds += time.perf_counter() - start
      truth = {c for c, y in enumerate(label_row) if y > 0}
      columns = range(len(score_row))
      top = heapq.nlargest(max(top_k, len(truth)), columns, key=score_row.__getitem__)
      videos += 1
      hits += top[0] in truth
      if truth:
        perr_sum += sum(1 for c in top[:len(truth)] if c in truth) / float(len(truth))
        perr_videos += 1
      for c in truth:
        positives[c] = positives.get(c, 0) + 1
      for c in top[:top_k]:
        entry = (score_row[c], c in truth)
        pool.append(entry)
        per_class.setdefault(c, []).append(entry)

  def ap(entries, total):
    entries = list(entries)
    random.Random(0).shuffle(entries)           # unbiased ties, then a stable sort
    entries.sort(key=lambda e: -e[0])
    found, result = 0, 0.0
    for rank, (_, label) in enumerate(entries, 1):
      if label:
        found += 1
        result += found / float(rank)
    return result / total if total else 0.0

  aps = [ap(per_class.get(c, []), n) for c, n in positives.items()]
  return {"avg_hit_at_one": hits / float(videos), "avg_perr": perr_sum / perr_videos,
          "gap": ap(pool, sum(positives.values())), "map": sum(aps) / len(aps),
          "convert_s": convert_seconds}


# ------------------------------------------------------------------ runs

def stream(args, num_videos, rng, class_probs, keep_batches=False):
  """Feeds generated batches to EvaluationMetrics; times metric calls and generation separately."""
  metrics = eval_util.EvaluationMetrics(args.num_classes, 20)
  metric_seconds, data_seconds, kept = 0.0, 0.0, []
  buffers = None
  tracemalloc.start()
  done = 0
  while done < num_videos:
    size = min(args.batch_size, num_videos - done)
    start = time.perf_counter()
    scores, labels, buffers = make_batch(rng, size, args.num_classes, class_probs,
                                         None if keep_batches else buffers)
    data_seconds += time.perf_counter() - start
    start = time.perf_counter()
    metrics.accumulate(scores, labels, 0.0)
    metric_seconds += time.perf_counter() - start
    if keep_batches:
      kept.append((scores, labels))
    done += size
  accumulate_seconds = metric_seconds
  accumulate_peak = tracemalloc.get_traced_memory()[1]
  state_bytes = sum(a.nbytes for parts in (metrics._scores, metrics._hits, metrics._classes)
                    for a in parts) + metrics._positives.nbytes
  del scores, labels, buffers
  tracemalloc.reset_peak()
  before_get = tracemalloc.get_traced_memory()[0]
  start = time.perf_counter()
  result = metrics.get()
  get_seconds = time.perf_counter() - start
  get_peak = tracemalloc.get_traced_memory()[1] - before_get
  tracemalloc.stop()
  return {"result": result, "metric_s": accumulate_seconds + get_seconds,
          "accumulate_s": accumulate_seconds, "get_s": get_seconds, "data_s": data_seconds,
          "accumulate_peak_mib": accumulate_peak / 2.0 ** 20, "get_extra_mib": get_peak / 2.0 ** 20,
          "state_mib": state_bytes / 2.0 ** 20, "batches": kept}


def summary(result):
  return "GAP %.4f  mAP %.4f  Hit@1 %.4f  PERR %.4f" % (result["gap"], result["map"],
                                                       result["avg_hit_at_one"], result["avg_perr"])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_videos", type=int, default=1000000)
  parser.add_argument("--num_classes", type=int, default=3862)
  parser.add_argument("--batch_size", type=int, default=10000)
  parser.add_argument("--python_videos", type=int, default=20000,
                      help="videos for the pure-Python comparison (0 skips it)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  ranks = np.arange(1, args.num_classes + 1, dtype=np.float64)
  class_probs = ranks ** -1.12 / np.sum(ranks ** -1.12)

  print("numpy %s, %d cores visible" % (np.__version__, os.cpu_count()))
  run = stream(args, args.num_videos, np.random.default_rng(args.seed), class_probs)
  print("EvaluationMetrics, %d videos x %d classes, batches of %d:"
        % (args.num_videos, args.num_classes, args.batch_size))
  print("  metric time %.1f s (accumulate %.1f s + get %.1f s) -> %.0f videos/s; data generation %.1f s"
        % (run["metric_s"], run["accumulate_s"], run["get_s"], args.num_videos / run["metric_s"],
           run["data_s"]))
  print("  memory: max RSS %.0f MiB (whole process, includes the generated batch buffers); "
        "EvaluationMetrics state %.0f MiB; tracemalloc peak %.0f MiB while accumulating (state + "
        "batch buffers + temporaries); get() needs %.0f MiB on top of the state"
        % (max_rss_mib(), run["state_mib"], run["accumulate_peak_mib"], run["get_extra_mib"]))
  print("  " + summary(run["result"]))

  if args.python_videos > 0:
    small = stream(args, args.python_videos, np.random.default_rng(args.seed + 1), class_probs,
                   keep_batches=True)
    start = time.perf_counter()
    reference = python_metrics(small["batches"])
    python_seconds = time.perf_counter() - start
    print("pure-Python heaps + sorts vs vectorised, %d videos x %d classes:"
          % (args.python_videos, args.num_classes))
    print("  python %.1f s (%.0f videos/s; %.1f s of it converting arrays to lists), vectorised %.2f s "
          "(%.0f videos/s): %.0fx faster (%.0fx without the conversion)"
          % (python_seconds, args.python_videos / python_seconds, reference["convert_s"],
             small["metric_s"], args.python_videos / small["metric_s"], python_seconds / small["metric_s"],
             (python_seconds - reference["convert_s"]) / small["metric_s"]))
    print("  python     " + summary(reference))
    print("  vectorised " + summary(small["result"]))
    worst = max(abs(reference[k] - small["result"][k]) for k in ("gap", "map", "avg_hit_at_one",
                                                                 "avg_perr"))
    print("  largest difference %.2g (summation order; tied scores get different random orders)" % worst)


if __name__ == "__main__":
  utils.run_cli(main, sys.argv[1:])
