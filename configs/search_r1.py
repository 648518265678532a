"""Search-R1 (Jin et al. 2025, PeterGriffinJin/Search-R1) with GRPO: Qwen2.5-3B/7B, NQ + HotpotQA training
mixture, E5 or BM25 top-3 retrieval behind a /retrieve server, EM reward, k3 KL 0.001, clip 0.2, G = 5,
512 prompts per step in two optimizer steps of 256 (REFERENCE.md §4; the rest from Search-R1's
train_grpo.sh, or ours where marked).

    python -m atomsearch_jax.train --config=configs/search_r1.py --workdir=gs://bucket/search_r1 \\
      --config.model.hf_path=/ckpt/Qwen2.5-7B --config.search.retriever=searchr1:http://10.0.0.2:8000 \\
      --config.data.train_files=/data/nq/train.jsonl,/data/hotpotqa/train.jsonl \\
      --config.data.eval_files=/data/nq/dev.jsonl,/data/hotpotqa/dev.jsonl
"""
import configs.default as default


def get_config():
    c = default.get_config()
    c.format = "search_r1"
    # Search-R1 trains on the union of NQ and HotpotQA train (79,168 + 90,447 questions), shuffled:
    # mixing in proportion to the set sizes is the same distribution.
    c.data.update(source="files", train_files="", eval_files="", eval_size=512, mixture="nq:79168,hotpotqa:90447")
    c.model.update(hf_path="", preset="qwen2.5-7b", dtype="bfloat16", max_len=6144,  # max_len: ours (prompt + 4500)
                   scan_layers=True, attention_block=512)  # preset: the planner's architecture (the command's Qwen2.5-7B)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.search.update(retriever="", topk=3, max_chars_per_doc=0)  # top-3; observations capped in tokens instead
    c.sft.steps = 0                                  # Search-R1 starts RL from the base/instruct model
    c.rl.steps = 1005                                # total_training_steps
    c.rl.prompts_per_step = 512                      # train_batch_size
    c.rl.group_size = 5                              # n_agent
    c.rl.optimizer.update(learning_rate=1e-6, warmup_steps=286, weight_decay=0.01)  # lr_warmup_steps_ratio 0.285
    # ppo_mini_batch_size 256 prompts (x5 rows): two optimizer steps per rollout batch, so the second one is
    # off-policy and the clip acts. Micro-batch: ours (memory only; results do not depend on it).
    c.rl.train_step.update(mini_batch_size=256 * 5, micro_batch_size=64, remat=True)
    # veRL (Search-R1's fork) averages the clipped loss over all response tokens of the mini-batch.
    c.rl.loss.update(eps_low=0.2, eps_high=0.2, dual_clip=0.0, kl_coef=0.001, kl_estimator="k3",
                     agg_mode="token-mean", entropy_coef=0.0)
    # 500 new tokens per turn and 500-token observations over 4 turns + the answer: 4500 tokens in all
    # (ours: the total; Search-R1 caps each turn, which this rollout loop does not).
    c.rl.rollout.update(max_response_tokens=4500, segment_steps=500, max_tool_calls=4, max_observation_tokens=500,
                        temperature=1.0, top_p=1.0, top_k=0)
    # ours: 2560 rows x 6144 slots in one state do not fit 64 chips of 95 GB by the plan (decode 114 GB per
    # chip); 12 GB of KV cache per chip rolls them out in 2 states (python -m atomsearch_jax.plan
    # --config=configs/search_r1.py --devices=64 --hbm_gb=95).
    c.rl.rollout.update(kv_cache_gb=12.0)
    c.rl.reward.update(outcome="search_r1_em", judge="none")
    c.rl.reward.overlong.update(max_length=0, cache_length=0)
    c.rl.checkpoint.update(max_to_keep=3, save_interval_steps=100)
    c.eval.every = 50
    return c
