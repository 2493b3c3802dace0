"""The any-k student (--k_frame_choices) and early exit (early_exit.py): the nested frame order, the
staged NeXtVLAD aggregation against the model on all frames at once, the exit rules and the frame
accounting against NumPy, and (slow) training, evaluation at fixed k, the gate and the programs."""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import config
import early_exit
import eval as eval_lib
import model_utils
import readers
import train
import utils
from helpers import (frame_record, make_frame_videos, model_flags, randomise, run_ok, run_program,
                     train_args, write_records)
from test_readers import reference_indices
from utils import InputError

tf.disable_v2_behavior()

SMALL = dict(model="NeXtVLADModel", model_type="student", feature_sizes="8,4", num_classes=5, groups=2,
             nextvlad_cluster_size=4, nextvlad_hidden_size=8, gating_reduction=2, max_frames=12)
STAGES = [3, 5, 12]


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def test_nested_order_reads_each_stage_near_its_uniform_frames():
  """Each stage's prefix: its uniform positions where nesting allows (6 of 30), every position once,
  no gap much wider than the stage's even spacing."""
  stages = [6, 10, 15, 20, 30]
  assert readers.nested_order(0, stages) == [] and readers.nested_order(1, stages) == [0]
  order = readers.nested_order(30, stages)
  assert sorted(order[:6]) == [0, 5, 10, 15, 20, 25], "uniform-6 of the 30 uniform frames"
  assert sorted(order[:10]) == [0, 3, 5, 10, 12, 15, 18, 20, 25, 27]
  for m in range(1, 31):
    order = readers.nested_order(m, stages)
    assert sorted(order) == list(range(m))
    for n in stages:
      taken = sorted(order[:min(n, m)])
      if n < m:
        assert max(np.diff(taken + [m])) <= 2.5 * m / n + 1, (m, n, taken)
  assert sorted(readers.nested_order(17, stages)[:6]) == [0, 2, 5, 8, 11, 14], "floor(i*17/6)"
  table = readers.nested_order_table([2, 4])
  assert table[0] == [0, 1, 2, 3] and table[1] == [0, 1, 2, 3] and table[4] == readers.nested_order(4, [2, 4])


def test_nested_reader_reads_uniform_frames_in_nested_order(tmp_path):
  videos = make_frame_videos(8, num_classes=10, min_frames=0, max_frames=30, seed=4)
  path = write_records(str(tmp_path / "n.tfrecord"), [frame_record(*v) for v in videos])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4], max_frames=24, k_frame=10,
                                          frame_sampling=readers.NESTED, nested_stages=[4, 10])
  with tf.Graph().as_default():
    batch, init = reader.input_batch([path], 8, training=False, num_readers=1)
    with tf.Session() as sess:
      sess.run(init)
      values = sess.run(batch)
  for row, vid in enumerate(values["video_ids"]):
    feats = videos[int(vid.decode()[1:])][2]
    n = min(len(feats["rgb"]), 24)
    uniform = reference_indices(n, 10, "uniform", 24)
    expected = [uniform[i] for i in readers.nested_order(len(uniform), [4, 10])]
    frames = utils.dequantize_np(np.concatenate([feats["rgb"], feats["audio"]], 1))
    assert values["num_frames"][row] == len(expected)
    np.testing.assert_allclose(values["video_matrix"][row, :len(expected)], frames[expected], atol=1e-6)
    assert not values["video_matrix"][row, len(expected):].any()


def test_a_drawn_k_samples_as_a_fixed_k():
  """sample_frame_indices with k a tensor (an any-k batch's draw) gives the positions of that k fixed."""
  methods = [m for m in readers.FRAME_SAMPLING_METHODS if m != "random"]
  with tf.Graph().as_default():
    n, k = tf.placeholder(tf.int32, []), tf.placeholder(tf.int32, [])
    drawn = {m: readers.sample_frame_indices(n, k, m, 60) for m in methods}
    with tf.Session() as sess:
      for frames in (0, 5, 29, 60):
        for fixed in (1, 3, 7, 20):
          got = sess.run(drawn, {n: frames, k: fixed})
          for method in methods:
            indices, count = got[method]
            expected = reference_indices(frames, fixed, method, 60)
            assert indices[:count].tolist() == expected and count == len(expected), (method, frames, fixed)


def test_any_k_reader_draws_one_k_per_batch(tmp_path):
  """Training batches of an any-k reader have k frames, k one of the choices, several of them over the
  batches, each video's frames by the sampling rule at that batch's k."""
  videos = make_frame_videos(40, num_classes=10, min_frames=1, max_frames=40, seed=6)
  path = write_records(str(tmp_path / "k.tfrecord"), [frame_record(*v) for v in videos])
  reader = readers.YT8MFrameFeatureReader(10, ["rgb", "audio"], [8, 4], max_frames=30, k_frame=6,
                                          frame_sampling="uniform", seed=3, k_frame_choices=[2, 5, 9])
  with tf.Graph().as_default():
    batch, init = reader.input_batch([path], 4, training=True, num_readers=1, shuffle_buffer=8)
    with tf.Session() as sess:
      sess.run(init)
      batches = [sess.run(batch) for _ in range(15)]
  ks = [b["video_matrix"].shape[1] for b in batches]
  assert set(ks) == {2, 5, 9}, ks
  for b, k in zip(batches, ks):
    for row, vid in enumerate(b["video_ids"]):
      feats = videos[int(vid.decode()[1:])][2]
      idx = reference_indices(min(len(feats["rgb"]), 30), k, "uniform", 30)
      frames = utils.dequantize_np(np.concatenate([feats["rgb"], feats["audio"]], 1))
      assert b["num_frames"][row] == len(idx)
      np.testing.assert_allclose(b["video_matrix"][row, :len(idx)], frames[idx], atol=1e-6)


GATE = [([4.0, -2.0, -30.0], -1.5), ([6.0, 1.0, -50.0], -2.0), ([0.0, 0.0, 0.0], 0.0)]
RULES = {"none": 0.5, "max_prob": 0.6, "prediction_change": 0.02, "gate": 0.5}


@pytest.fixture(scope="module")
def staged_run():
  """For random weights and 5 videos with 12, 4, 0, 7 and 5 frames, in one graph: the staged outputs
  with each rule of RULES, every stage's outputs, and the model on each stage's frames at once."""
  flags = model_flags(**SMALL)
  rng = np.random.RandomState(1)
  video, valid = rng.rand(5, 12, 12).astype(np.float32), np.array([12, 4, 0, 7, 5], np.int32)
  with tf.Graph().as_default():
    frames, num_frames = tf.placeholder(tf.float32, [None, 12, 12]), tf.placeholder(tf.int32, [None])
    outputs = {rule: early_exit.Staged(flags, STAGES, rule, threshold, GATE).outputs(frames, num_frames)
               for rule, threshold in RULES.items()}
    staged = early_exit.Staged(flags, STAGES)
    every = [o for _, o, _ in staged.stage_outputs(frames, num_frames, decide=False)]
    at_once = [model_utils.build_model(flags, frames[:, :n], tf.minimum(num_frames, n), is_training=False)
               for n in STAGES]
    with tf.Session() as sess:
      randomise(sess, tf.global_variables(), np.random.RandomState(0))
      got = sess.run([outputs, every, at_once], {frames: video, num_frames: valid})
  return got + [valid, staged.model]


def test_staged_aggregation_equals_all_frames_at_once(staged_run):
  """Stage s (the new frames' sums added to the previous stages') gives the model's output on its
  first n_s frames read at once, to 1e-5; without a rule every video ends at the last stage that adds
  frames, and its outputs are the model's on all of them."""
  outputs, every, at_once, valid, model = staged_run
  outputs = outputs["none"]
  for staged, whole in zip(every, at_once):
    for key in ("predictions", "logits", "representation"):
      np.testing.assert_allclose(staged[key], whole[key], rtol=1e-5, atol=1e-5)
  assert outputs["exit_stage"].tolist() == [2, 1, 0, 2, 1], "a video exits once its frames are read"
  assert outputs["frames_read"].tolist() == [12, 4, 0, 7, 5]
  for row, stage in enumerate(outputs["exit_stage"]):
    np.testing.assert_allclose(outputs["predictions"][row], at_once[stage]["predictions"][row], atol=1e-5)
  head = model.head_macs(5)
  assert outputs["macs"].tolist() == [12 * model.frame_macs() + 3 * head, 5 * model.frame_macs() + 2 * head,
                                      3 * model.frame_macs() + head, 12 * model.frame_macs() + 3 * head,
                                      5 * model.frame_macs() + 2 * head]
  assert model.macs(12, 5) == 12 * model.frame_macs() + head


def _numpy_exit(rule, threshold, probabilities, valid, gate=None):
  """Exit stage per video: an independent statement of the rules (module docstring of early_exit)."""
  stages = []
  for row in range(len(valid)):
    for s, end in enumerate(STAGES):
      p = probabilities[s][row]
      q = probabilities[s - 1][row] if s else None
      if rule == "max_prob":
        fire = p.max() >= threshold
      elif rule == "prediction_change":
        fire = q is not None and np.abs(p - q).max() <= threshold
      else:
        pc = np.clip(p, 1e-7, 1 - 1e-7)
        entropy = -np.mean(pc * np.log(pc) + (1 - pc) * np.log(1 - pc))
        features = np.array([p.max(), entropy, 0.0 if q is None else np.abs(p - q).max()])
        weights, bias = gate[s]
        fire = _sigmoid(features @ np.array(weights) + bias) >= threshold
      if fire or valid[row] <= end or s == len(STAGES) - 1:
        stages.append(s)
        break
  return stages


@pytest.mark.parametrize("rule", ["max_prob", "prediction_change", "gate"])
def test_exit_rules_match_numpy(staged_run, rule):
  outputs, every, _, valid, model = staged_run
  probabilities = [o["predictions"] for o in every]
  expected = _numpy_exit(rule, RULES[rule], probabilities, valid, GATE)
  outputs = outputs[rule]
  assert outputs["exit_stage"].tolist() == expected
  assert outputs["frames_read"].tolist() == [min(v, STAGES[s]) for v, s in zip(valid, expected)]
  assert outputs["macs"].tolist() == [STAGES[s] * model.frame_macs() + (s + 1) * model.head_macs(5)
                                      for s in expected]
  for row, stage in enumerate(expected):
    np.testing.assert_allclose(outputs["predictions"][row], probabilities[stage][row], atol=1e-6)


def test_frame_count_summary():
  count = early_exit.FrameCount([6, 10, 30])
  count.add(np.array([6, 6, 10]), np.array([100, 100, 200]))
  count.add(np.array([0, 25]), 300)
  summary = count.summary()
  assert summary["frames_read_mean"] == pytest.approx(47 / 5) and summary["frames_read_median"] == 6
  assert summary["frames_read_histogram"] == {"0": 1, "1-6": 2, "7-10": 1, "11-30": 1}
  assert summary["macs_per_video"] == pytest.approx(1000 / 5)
  free = early_exit.FrameCount(None)
  free.add(np.array([3, 3, 8]), 1)
  assert free.summary()["frames_read_histogram"] == {"0": 0, "1-3": 2, "4-8": 1}


def test_fit_logistic_recovers_a_separating_rule():
  rng = np.random.RandomState(0)
  x = rng.randn(400, 3)
  y = (x[:, 0] - 0.5 * x[:, 2] > 0.2).astype(float)
  weights, bias = early_exit.fit_logistic(x, y, l2=1e-4)
  assert ((x @ np.array(weights) + bias > 0) == y).mean() > 0.97
  assert weights[0] > 0 > weights[2]


def test_bad_flags_are_one_line_errors(frame_data, tmp_path):
  with pytest.raises(InputError, match="k_frame_choices.*increasing frame counts"):
    train.main(train_args(frame_data, tmp_path / "r", "--model_type=student", "--k_frame_choices=6,4"))
  with pytest.raises(InputError, match="k_frame_choices: expected a frame-level student or kd run"):
    train.main(train_args(frame_data, tmp_path / "r", "--model_type=teacher", "--k_frame_choices=2,4"))
  with pytest.raises(InputError, match="--k_frame_choices=4,30: expected at most --max_frames=24"):
    train.main(train_args(frame_data, tmp_path / "r", "--model_type=student", "--k_frame_choices=4,30"))
  with pytest.raises(InputError, match="--model=HierarchicalRnnModel"):
    early_exit.Staged(model_flags(model="HierarchicalRnnModel", model_type="student"), [2, 4])
  with pytest.raises(InputError, match="expected --exit_stages"):
    early_exit.Staged(model_flags(**SMALL), [], "max_prob")
  assert not os.path.exists(str(tmp_path / "r"))


@pytest.fixture(scope="module")
def any_k_run(frame_data, tmp_path_factory):
  """A small any-k student (k in 2, 4, 8, 12), 40 steps."""
  train_dir = tmp_path_factory.mktemp("any_k")
  train.main(train_args(frame_data, train_dir, "--model_type=student", "--frame_sampling=uniform",
                        "--k_frame_choices=2,4,8,12", "--max_steps=40"))
  return str(train_dir)


@pytest.mark.slow
def test_any_k_student_evaluates_at_each_k_and_with_early_exit(any_k_run, frame_data):
  """Evaluated at its default (the largest k) and at a fixed k=2 (eval_k2), then with every stage
  (the same frames as k=12: the same GAP) and with max_prob exit (fewer frames)."""
  saved = config.load_model_flags(any_k_run)
  assert saved["k_frame_choices"] == [2, 4, 8, 12] and saved["k_frame"] == 12
  common = ["eval.py", "--train_dir=" + any_k_run, "--eval_data_pattern=" + frame_data["validate"],
            "--run_once", "--batch_size=64"]
  default, = eval_lib.main(common)
  at_2, = eval_lib.main(common + ["--k_frame=2"])
  every, = eval_lib.main(common + ["--exit_stages=2,4,8,12"])
  early, = eval_lib.main(common + ["--exit_rule=max_prob", "--exit_threshold=0.5"])
  assert at_2["frames_read_mean"] <= 2 < default["frames_read_mean"] <= 12
  assert json.load(open(os.path.join(any_k_run, "eval_k2", "metrics.json")))["gap"] == at_2["gap"]
  assert every["gap"] == pytest.approx(default["gap"], abs=1e-4)
  assert every["frames_read_mean"] == pytest.approx(default["frames_read_mean"])
  assert early["frames_read_mean"] < every["frames_read_mean"]
  assert sum(early["frames_read_histogram"].values()) == 150
  assert os.path.exists(os.path.join(any_k_run, "eval_exit_max_prob_0.5_2-4-8-12", "metrics.json"))
  assert 0.3 < at_2["gap"] and 0.3 < early["gap"]


@pytest.mark.slow
def test_gate_and_the_programs_with_early_exit(any_k_run, frame_data, tmp_path):
  """early_exit.py fits the gate (FrameExit targets); eval.py and inference.py run --exit_rule in a
  fresh interpreter with the documented command lines; bad exit flags are one-line errors."""
  gate = early_exit.main(["early_exit.py", "--train_dir=" + any_k_run, "--gate_target=frameexit",
                          "--input_data_pattern=" + frame_data["train"], "--gate_batches=4",
                          "--batch_size=64"])
  assert gate["stages"] == [2, 4, 8, 12] and gate["videos"] == 256 and len(gate["weights"]) == 4
  assert gate["mixed_precision"] == "none"   # the precision it was fitted in, as eval.py records it
  done = run_ok("eval.py", "--train_dir=" + any_k_run, "--eval_data_pattern=" + frame_data["validate"],
                "--run_once", "--exit_rule=gate", "--exit_threshold=0.5")
  assert "frames read: mean" in done.stderr
  metrics = json.load(open(os.path.join(any_k_run, "eval_exit_gate_0.5_2-4-8-12", "metrics.json")))
  assert metrics["num_videos"] == 150 and 2 <= metrics["frames_read_mean"] <= 12
  output = str(tmp_path / "sub.csv")
  done = run_ok("inference.py", "--train_dir=" + any_k_run, "--input_data_pattern=" + frame_data["validate"],
                "--output_file=" + output, "--exit_rule=max_prob", "--exit_threshold=0.5")
  assert "frames read: mean" in done.stderr and len(open(output).readlines()) == 151
  with pytest.raises(InputError, match="--exit_stages=2,4: .*exit_gate.json was fitted for stages"):
    eval_lib.main(["eval.py", "--train_dir=" + any_k_run, "--eval_data_pattern=" + frame_data["validate"],
                   "--run_once", "--exit_rule=gate", "--exit_stages=2,4"])
  bad = run_program("inference.py", "--train_dir=" + any_k_run, "--input_data_pattern=" + frame_data["validate"],
                    "--output_file=" + output, "--exit_rule=max_prob", "--exit_threshold=2")
  assert bad.returncode == 2 and "exit_threshold" in bad.stderr.strip().splitlines()[-1]
