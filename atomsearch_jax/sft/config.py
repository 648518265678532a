"""SFT settings (ml_collections): the shared trainer settings with an SFT learning rate."""
from __future__ import annotations

import ml_collections

from atomsearch_jax.training import config as training_config


def get_config() -> ml_collections.ConfigDict:
    config = training_config.get_config()
    config.optimizer.learning_rate = 1e-5
    config.optimizer.warmup_steps = 10
    # Synthetic world only: entity-renamed copies of each teacher trajectory (data/world/counterfactual.py),
    config.world_counterfactual_copies = 0
    # ... with the words of multi-word names permuted per type and position instead of whole names, so a
    # renamed name is a new combination of known words (data/world/counterfactual.py, EntityRenaming(words=)).
    config.world_counterfactual_words = False
    config.world_first_turn_copies = 0    # ... and renamed first turns only (prompt to the first search call)
    # Share of whole teacher trajectories from a weak teacher that stops after the first hop and answers its
    # bridge entity (drawn per example; see train._world_teacher_examples).
    config.world_early_answer_fraction = 0.0
    # ... whose plan names the first hop only ("first_hop") or the whole chain ("whole_chain": the faithful
    # teacher's trajectory up to the thought after the first observation, which answers instead of searching on).
    config.world_early_answer_plan = "first_hop"
    # Share of whole teacher trajectories whose final answer is a sentence stating the last hop's fact
    # instead of the bare entity (drawn per example, independently of the early answer).
    config.world_sentence_answer_fraction = 0.0
    # Share of whole teacher trajectories whose first search is the question itself (drawn per example): the
    # teacher's second strategy, which reads the first hop's entity from the results instead of copying it.
    config.world_question_query_fraction = 0.0
    # Shuffled passes over the world's corpus mixed into SFT as language-modelling rows of this many tokens.
    config.world_corpus_passes = 0
    config.world_corpus_row_tokens = 448
    return config
