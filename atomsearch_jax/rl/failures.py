"""Stop a run whose external services fail: judge and search failure rates over a sliding window.

Every judge request and tool call is retried by its client and, when it still fails, recorded on its
sample (and the sample is excluded from the update). A few such samples are noise; a broken retriever or
a misconfigured judge turns every batch into one, and the run would silently train on nothing (loss 0)
or degrade Atom-Searcher to outcome-only GRPO. So the loop reports each batch's counts here and stops,
after a checkpoint, once a rate over the last `window` batches passes its threshold.
"""
from __future__ import annotations

import collections
import dataclasses
import ml_collections


class ServiceFailureError(RuntimeError):
    """A service's failure rate passed its configured threshold (the run saved a checkpoint first)."""


@dataclasses.dataclass(frozen=True)
class _Batch:
    judge_requests: int
    judge_failures: int
    tool_calls: int
    search_failures: int


class FailureMonitor:
    """Failure rates of the judge (failed / sent requests) and of search (failed / made tool calls)
    over the last `window` batches. `check()` raises ServiceFailureError naming the service, the rate,
    the threshold and the last errors seen, once a window with at least `min_events` events of that
    service is above its threshold."""

    def __init__(self, *, window: int = 5, max_judge_failure_rate: float = 0.2,
                 max_search_failure_rate: float = 0.2, min_events: int = 20):
        if window < 1 or min_events < 1:
            raise ValueError(f"failures.window={window} and failures.min_events={min_events} must be >= 1")
        for name, rate in (("max_judge_failure_rate", max_judge_failure_rate),
                           ("max_search_failure_rate", max_search_failure_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"failures.{name}={rate} must be in [0, 1] (1 = never stop)")
        self.max_rates = {"judge": float(max_judge_failure_rate), "search": float(max_search_failure_rate)}
        self.min_events = int(min_events)
        self.batches: collections.deque[_Batch] = collections.deque(maxlen=int(window))
        self.last_errors: dict[str, list[str]] = {"judge": [], "search": []}

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict) -> "FailureMonitor":
        return cls(**cfg.to_dict())

    def observe(self, *, judge_requests: int, judge_failures: int, tool_calls: int, search_failures: int,
                judge_errors: tuple[str, ...] = (), search_errors: tuple[str, ...] = ()) -> None:
        """Records one rollout batch's counts (and a few of its error messages, for the stop message)."""
        if not (0 <= judge_failures <= judge_requests and 0 <= search_failures <= tool_calls):
            raise ValueError(f"failure counts exceed attempts: judge {judge_failures}/{judge_requests}, "
                             f"search {search_failures}/{tool_calls}")
        self.batches.append(_Batch(judge_requests, judge_failures, tool_calls, search_failures))
        for service, errors in (("judge", judge_errors), ("search", search_errors)):
            if errors:
                self.last_errors[service] = [str(e)[:300] for e in errors[:3]]

    def rates(self) -> dict[str, tuple[int, int]]:
        """service -> (failures, attempts) over the window."""
        return {
            "judge": (sum(b.judge_failures for b in self.batches), sum(b.judge_requests for b in self.batches)),
            "search": (sum(b.search_failures for b in self.batches), sum(b.tool_calls for b in self.batches)),
        }

    def metrics(self) -> dict[str, float]:
        return {f"failures/{service}_rate": failed / attempts if attempts else 0.0
                for service, (failed, attempts) in self.rates().items()}

    def check(self) -> None:
        """Raises ServiceFailureError when a service's windowed failure rate is above its threshold."""
        for service, (failed, attempts) in self.rates().items():
            if attempts < self.min_events or failed / attempts <= self.max_rates[service]:
                continue
            limit = f"rl.failures.max_{service}_failure_rate={self.max_rates[service]}"
            raise ServiceFailureError(
                f"{service} failed {failed} of {attempts} times over the last {len(self.batches)} rollout batches "
                f"({failed / attempts:.0%} > {limit}); last errors: {self.last_errors[service] or 'none recorded'}. "
                f"Check the {service} service; rerun the same command to resume from the checkpoint.")
