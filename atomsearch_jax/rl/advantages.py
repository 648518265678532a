"""Group-relative advantages (GRPO / Dr. GRPO) and dynamic sampling (DAPO), host-side numpy.

Rewards come ordered group by group: rows g·G … g·G+G−1 are the G samples of prompt g.
"""
from __future__ import annotations

import numpy as np

ADVANTAGE_EPS = 1e-6


def _groups(rewards: np.ndarray, group_size: int) -> np.ndarray:
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [B*G], got shape {rewards.shape}")
    if int(group_size) < 1:
        raise ValueError(f"group_size={group_size} must be >= 1")
    if rewards.shape[0] % group_size:
        raise ValueError(f"rewards has {rewards.shape[0]} rows, not a multiple of group_size={group_size}")
    if not np.all(np.isfinite(rewards)):
        bad = np.flatnonzero(~np.isfinite(rewards))[:5].tolist()
        raise ValueError(f"rewards contain non-finite values at rows {bad}")
    return rewards.reshape(-1, group_size)


def group_advantages(rewards: np.ndarray, group_size: int, *, normalize_std: bool = True,
                     valid: np.ndarray | None = None) -> np.ndarray:
    """Advantages [B*G] (float32) from rewards [B*G] ordered group by group.

    A_i = (R_i − mean_group) / (std_group + 1e-6) with the unbiased std, as veRL; with
    normalize_std=False (Dr. GRPO) A_i = R_i − mean_group. A singleton group (group_size 1) uses mean
    0, std 1. valid [B*G] bool: rows to exclude (False: e.g. the judge failed on them, so their reward
    is not comparable with their group mates') get advantage 0 and do not enter their group's mean and
    std; a group left with one valid row has nothing to compare it with and gets advantage 0.
    """
    groups = _groups(rewards, group_size)
    keep = np.ones_like(groups, bool) if valid is None else np.asarray(valid, bool).reshape(groups.shape)
    if group_size == 1:
        mean, std = np.zeros_like(groups), np.ones_like(groups)
    else:
        count = keep.sum(axis=1, keepdims=True)
        mean = np.where(keep, groups, 0.0).sum(axis=1, keepdims=True) / np.maximum(count, 1)
        sq = np.where(keep, (groups - mean) ** 2, 0.0).sum(axis=1, keepdims=True)
        std = np.sqrt(sq / np.maximum(count - 1, 1))
        keep = keep & (count > 1)
    adv = groups - mean
    if normalize_std:
        adv = adv / (std + ADVANTAGE_EPS)
    return np.where(keep, adv, 0.0).reshape(-1).astype(np.float32)


def informative_rows(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """Dynamic sampling (DAPO): bool [B*G], False for rows of groups whose rewards are all equal.

    Such groups have zero advantage everywhere and only dilute the batch. The rollout loop may drop
    them and over-sample to refill; `GRPOTrainer` with dynamic_sampling on zeroes their loss mask
    instead (static shapes: no recompilation), which is equivalent for every loss aggregation mode.
    """
    groups = _groups(rewards, group_size)
    informative = np.ptp(groups, axis=1) > 0
    return np.repeat(informative, group_size)
