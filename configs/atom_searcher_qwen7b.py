"""Atom-Searcher at paper scale (REFERENCE.md §4): Qwen2.5-7B-Instruct, lr 1e-6, 256 prompts x 16,
k3 KL 0.001, clip 0.2, up to 10 tool calls, an LLM judge (the RRM, e.g. Qwen3-30B-A3B behind vLLM/SGLang
or `python -m atomsearch_jax.serve`) and a retrieval server (Search-R1 /retrieve or FlashRAG
/batch_search, or `python -m atomsearch_jax.serve_retriever`). Meant for a TPU pod:

    python -m atomsearch_jax.train --config=configs/atom_searcher_qwen7b.py --workdir=gs://bucket/run \
      --config.model.hf_path=/ckpt/Qwen2.5-7B-Instruct --config.search.retriever=searchr1:http://10.0.0.2:8000 \
      --config.rl.reward.judge_url=http://10.0.0.3:8001/v1 --config.data.train_files=/data/train.jsonl \
      --config.data.eval_files=/data/dev.jsonl --config.sft.trajectory_files=/data/sft/atomic.jsonl

RL starts from an SFT policy, as in the paper (~1k atomic-thought trajectories from a Qwen2.5-72B teacher):
make the file with `python -m atomsearch_jax.make_sft_data` (README), or set --config.sft.steps=0 to skip.
"""
import configs.default as default


def get_config():
    c = default.get_config()
    c.format = "atom_searcher"
    c.data.update(source="files", train_files="", eval_files="", eval_size=512)
    c.model.update(hf_path="", dtype="bfloat16", max_len=16384, scan_layers=True)
    c.mesh.update(data=1, fsdp=-1, tensor=4)
    c.search.update(retriever="", topk=5, max_chars_per_doc=1500)
    # SFT on the teacher's trajectory file first: ~1k trajectories x 3 epochs at 64 per step.
    c.sft.trajectory_files = ""
    c.sft.steps = 48
    c.sft.batch_size = 64
    c.sft.optimizer.update(learning_rate=1e-5, warmup_steps=5, schedule="cosine", total_steps=48, final_lr_ratio=0.1)
    c.sft.train_step.update(micro_batch_size=8, remat=True)
    c.sft.checkpoint.update(max_to_keep=2, save_interval_steps=16)
    c.rl.steps = 200
    c.rl.prompts_per_step = 256
    c.rl.group_size = 16
    c.rl.optimizer.update(learning_rate=1e-6, warmup_steps=0)
    c.rl.train_step.update(mini_batch_size=1024, micro_batch_size=64, remat=True)
    c.rl.loss.update(eps_low=0.2, eps_high=0.2, kl_coef=0.001, kl_estimator="k3", agg_mode="token-mean")
    c.rl.rollout.update(max_response_tokens=12000, segment_steps=512, max_tool_calls=10, temperature=1.0)
    c.rl.reward.update(outcome="deepresearcher", judge="http", judge_url="", judge_model="Qwen3-30B-A3B",
                       schedule="linear", alpha0=0.5)
    c.rl.checkpoint.update(max_to_keep=3, save_interval_steps=5)
    c.eval.every = 20
    return c
