"""Failing services degrade nothing silently: a sample whose judge call failed is left out of the
update and of its group's statistics, overlong shaping counts only the policy's own tokens, and judge or
search failure rates past their thresholds stop the run after a checkpoint, with a message saying why."""
import jax
import numpy as np
import pytest

from atomsearch_jax import rl
from atomsearch_jax.agent import Trajectory, training_batch
from atomsearch_jax.formats import get_format
from atomsearch_jax.model import tiny_config
from atomsearch_jax.parallel import make_mesh
from atomsearch_jax.rewards import RewardManager
from atomsearch_jax.rl import FailureMonitor, ServiceFailureError, group_advantages
from atomsearch_jax.train import observe_failures, stop_on_failures
from training_helpers import random_params, rollout_batch


def test_excluded_rows_leave_the_group_statistics():
    rewards = np.array([1.0, 0.0, 0.5, -1.0, 0.2, 0.2, 0.2, 0.9])
    valid = np.array([True, True, True, False, True, False, False, False])
    adv = group_advantages(rewards, 4, valid=valid)
    kept = rewards[:3]
    np.testing.assert_allclose(adv[:3], (kept - kept.mean()) / (kept.std(ddof=1) + 1e-6), rtol=1e-5)
    assert adv[3] == 0.0                      # the excluded row itself
    np.testing.assert_array_equal(adv[4:], 0.0)  # one valid row left: nothing to compare it with
    np.testing.assert_allclose(group_advantages(rewards, 4), group_advantages(rewards, 4, valid=np.ones(8, bool)))


def test_trainer_masks_invalid_rows():
    c = rl.get_config()
    c.group_size = 4
    trainer = rl.GRPOTrainer(tiny_config(), random_params(tiny_config(), 0), c,
                             mesh=make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    batch = rollout_batch(0, 128)
    batch["valid"] = np.arange(16) != 5
    arrays, stats = trainer.prepare_batch(batch)
    assert not arrays["loss_mask"][5].any() and arrays["loss_mask"][4].any()
    assert arrays["advantages"][5] == 0.0 and stats["excluded_rows_frac"] == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match="valid"):
        trainer.prepare_batch({**batch, "valid": np.ones(15, bool)})


def trajectory(generated, inserted, *, search_failures=0):
    """A trajectory with a 3-token prompt, `generated` policy tokens and `inserted` tool-result tokens."""
    n = 3 + generated + inserted
    mask = np.zeros(n, np.float32)
    mask[3:3 + generated] = 1
    return Trajectory(record_index=0, sample_index=0, question="q?", golden_answers=["Paris"],
                      tokens=np.zeros(n, np.int32), loss_mask=mask, logprobs=np.zeros(n, np.float32),
                      prompt_length=3, response="<answer> Paris </answer>", stop_reason="answer",
                      tool_calls=1, search_failures=search_failures)


def test_overlong_shaping_counts_only_generated_tokens():
    manager = RewardManager(get_format("search_r1"), outcome="search_r1_em", overlong=(100, 40))
    short_with_long_results, long_own = trajectory(50, 400), trajectory(80, 0)
    _, comp = manager.score([short_with_long_results, long_own], 0)
    np.testing.assert_allclose(comp["overlong"], [0.0, (60 - 80) / 40])


def test_failed_judge_and_search_rows_are_invalid_in_the_batch():
    batch = training_batch([trajectory(5, 2), trajectory(5, 2, search_failures=1), trajectory(5, 2)],
                           np.zeros(3), exclude=np.array([False, False, True]))
    assert batch["valid"].tolist() == [True, False, False]


def components(judged, failed):
    errors = ["judge returned HTTP 500"] * failed + [None] * (judged - failed)
    return {"judge_used": np.ones(judged), "judge_failed": np.array([e is not None for e in errors], float),
            "judge_error": errors}


def test_monitor_thresholds_and_window():
    monitor = FailureMonitor(window=2, max_judge_failure_rate=0.5, max_search_failure_rate=1.0, min_events=4)
    monitor.observe(judge_requests=4, judge_failures=4, tool_calls=0, search_failures=0)
    with pytest.raises(ServiceFailureError, match=r"judge failed 4 of 4 .*max_judge_failure_rate=0.5"):
        monitor.check()
    monitor.observe(judge_requests=4, judge_failures=0, tool_calls=0, search_failures=0)
    monitor.check()                                   # 4 of 8 = 50%: not above the threshold
    monitor.observe(judge_requests=2, judge_failures=0, tool_calls=9, search_failures=9)
    monitor.check()                                   # the failing batch left the window; search never stops
    with pytest.raises(ValueError, match="exceed"):
        monitor.observe(judge_requests=1, judge_failures=2, tool_calls=0, search_failures=0)


def test_run_stops_with_a_checkpoint_when_the_judge_keeps_failing(tmp_path):
    c = rl.get_config()
    c.group_size = 4
    c.checkpoint.directory = str(tmp_path / "ckpt")
    c.failures.update(window=1, min_events=2)
    trainer = rl.GRPOTrainer(tiny_config(), random_params(tiny_config(), 0), c,
                             mesh=make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    monitor = FailureMonitor.from_config(c.failures)
    trajectories = [trajectory(5, 2) for _ in range(4)]
    observe_failures(monitor, trajectories[:1] * 5, components(5, 1))
    stop_on_failures(monitor, trainer, {"data_iterator": {"k": 0}})    # 1 of 5 = 20%: not above the default
    observe_failures(monitor, trajectories, components(4, 4))
    with pytest.raises(ServiceFailureError, match=r"judge failed 4 of 4.*HTTP 500.*resume"):
        stop_on_failures(monitor, trainer, {"data_iterator": {"k": 7}})
    from atomsearch_jax.training import Checkpointer
    checkpointer = Checkpointer(tmp_path / "ckpt")
    assert checkpointer.latest_step() == 0
    checkpointer.close()
