"""ReSearch (Chen et al. 2025, Agent-RL/ReCall): Qwen2.5-7B/32B(-Instruct) trained on MuSiQue with
<search>/<result> tags and \\boxed answers, the ReSearch reward (0 / 0.1 / F1), GRPO with k3 KL 0.001,
clip 0.2, G = 5, 256 prompts per step, prompt 512 / response 8192 tokens, top-5 E5 retrieval over
Wikipedia-2018 behind a FlashRAG /batch_search server (REFERENCE.md §4; ours where marked).

    python -m atomsearch_jax.train --config=configs/research.py --workdir=gs://bucket/research \\
      --config.model.hf_path=/ckpt/Qwen2.5-7B-Instruct --config.search.retriever=flashrag:http://10.0.0.2:8000 \\
      --config.data.train_files=/data/musique/train.jsonl --config.data.eval_files=/data/musique/dev.jsonl
"""
import configs.default as default


def get_config():
    c = default.get_config()
    c.format = "research"
    c.data.update(source="files", train_files="", eval_files="", eval_size=512, mixture="")  # MuSiQue train only
    c.model.update(hf_path="", preset="qwen2.5-7b", dtype="bfloat16", max_len=512 + 8192,
                   scan_layers=True, attention_block=512)  # preset: the planner's architecture (the command's Qwen2.5-7B-Instruct)
    c.mesh.update(data=1, fsdp=-1, tensor=4)
    c.search.update(retriever="", topk=5, max_chars_per_doc=0)
    c.sft.steps = 0
    c.rl.steps = 156                                 # ours: 2 epochs of MuSiQue train (19,938 / 256 per step)
    c.rl.prompts_per_step = 256
    c.rl.group_size = 5
    c.rl.optimizer.update(learning_rate=1e-6, warmup_steps=0, weight_decay=0.01)
    # ours: 64 prompts (x5 rows) per optimizer step, 4 steps per rollout batch (the mini-batch is not in
    # REFERENCE.md); micro-batch for memory only.
    c.rl.train_step.update(mini_batch_size=64 * 5, micro_batch_size=16, remat=True)
    c.rl.loss.update(eps_low=0.2, eps_high=0.2, dual_clip=0.0, kl_coef=0.001, kl_estimator="k3",
                     agg_mode="token-mean", entropy_coef=0.0)
    c.rl.rollout.update(max_response_tokens=8192, segment_steps=512, max_tool_calls=8,  # tool calls: ours
                        max_observation_tokens=0, temperature=1.0, top_p=1.0, top_k=0)
    c.rl.reward.update(outcome="research", judge="none")
    c.rl.reward.overlong.update(max_length=0, cache_length=0)
    c.rl.checkpoint.update(max_to_keep=3, save_interval_steps=20)
    c.eval.every = 20
    return c
