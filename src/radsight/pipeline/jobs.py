"""The job state machine (pure).

::

    queued --claim--> running --ok--> done
                         |--retryable error, attempts left--> queued (after backoff)
                         |--retryable error, no attempts left--> dead   (dead-letter)
                         |--permanent error--> failed
                         '--lease expired (worker died)--> queued | dead

One job exists per (study, algorithm version) and per (result, destination), and per
revision of a re-analysed result (:mod:`radsight.pipeline.reanalysis`): its
``dedup_key`` makes creating it idempotent, and a job that reruns after a crash produces
the same outputs (deterministic UIDs), so each study ends with exactly one result.
"""

from __future__ import annotations

from dataclasses import dataclass

STATES = ("queued", "running", "done", "failed", "dead")
FINAL_STATES = ("done", "failed", "dead")


@dataclass(frozen=True)
class Transition:
    state: str
    #: seconds to wait before the job may run again (queued only)
    delay_s: float = 0.0


def after_failure(
    *,
    attempts: int,
    max_attempts: int,
    retryable: bool,
    backoff_s: float,
    backoff_max_s: float,
) -> Transition:
    """Where a job goes after its ``attempts``-th try failed."""
    if not retryable:
        return Transition("failed")
    if attempts >= max_attempts:
        return Transition("dead")
    return Transition("queued", backoff_delay(attempts, backoff_s, backoff_max_s))


def backoff_delay(attempts: int, base_s: float, max_s: float) -> float:
    """Exponential backoff: base, 2*base, 4*base, ... capped at max_s."""
    return float(min(max_s, base_s * (2 ** max(attempts - 1, 0))))


def _revised(key: str, revision: int) -> str:
    # revision 0 keeps the keys jobs had before re-analysis existed
    return f"{key}:r{revision}" if revision > 0 else key


def analyse_key(
    study_id: int, algorithm_name: str, algorithm_version: str, revision: int = 0
) -> str:
    """One analysis job per (study, algorithm version, revision of its result)."""
    return _revised(f"analyse:{study_id}:{algorithm_name}:{algorithm_version}", revision)


def deliver_key(result_id: int, destination_id: int, revision: int = 0) -> str:
    """One delivery job per (result revision, destination): a re-analysed result is sent
    again, once."""
    return _revised(f"deliver:{result_id}:{destination_id}", revision)
