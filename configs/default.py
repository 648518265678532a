"""The embedded default: Atom-Searcher on the synthetic multi-hop world, a tiny Qwen2.5-shaped model,
BM25 search, the oracle process judge; SFT then GRPO, on CPU in minutes.

    python -m atomsearch_jax.train --config=configs/default.py --workdir=/tmp/atomsearch
"""
import ml_collections

from atomsearch_jax import rl, sft


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.format = "atom_searcher"           # atom_searcher | research | search_r1 | hermes
    c.prompt_version = ""                # "" = the format's default system prompt version
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    # XLA:CPU devices made of this process's cores (0 = JAX's default, one; CPU only, set before any device
    # use; XLA_FLAGS' --xla_force_host_platform_device_count wins). Two split each decode step's rows: decode
    # steps 1.23x and updates 1.05x faster on 2 cores (scripts/bench_cpu_devices.py, reference attention).
    # Not the default: the job's float summation order changes with it, and with cpu_flash and the judge's route
    # check its held-out GRPO gains were +0.299 / +0.265 / +0.032 (seeds 0-2) against +0.451 / +0.350 / +0.046
    # with one device (BENCHMARKS.md, "The default job with cpu_flash on two devices ...").
    c.cpu_devices = 0

    # Questions and corpus: the synthetic world, or QA files + a retriever for real data.
    c.data = ml_collections.ConfigDict(dict(
        source="world",                  # world | files
        world_seed=0, world_scale=2.0,
        # System prompt version per format on the synthetic world (absent = the format's published prompt;
        # source=files always uses the published prompts). A model trained from scratch on the world learns
        # the protocol from SFT, not from instructions, and every row pays for the prompt's tokens.
        world_prompt_versions=ml_collections.ConfigDict({"atom_searcher": "atom_searcher_brief_v1"}),
        # Shares of the world's start entities held out: validation (evaluated during training, for tuning)
        # and test (the held-out questions of report.json, never used for any choice).
        validation_fraction=0.12, test_fraction=0.28,
        # Share of the train questions (whole start entities) kept out of SFT, GRPO's prompts only: on questions
        # SFT answered, the policy recites (after 720 of 960 SFT steps its rollouts at T 0.8 score F1 0.81-0.97,
        # entropy 0.01: groups without contrast), so GRPO could not learn what held-out questions need
        # (BENCHMARKS.md, "GRPO's prompts, its learning rate and batch, and the late copy").
        grpo_only_fraction=0.4,
        train_files="", eval_files="",    # comma-separated QA files (source=files), any load_qa_file format
        heldout_files="",                # source=files: the held-out questions ("" = the eval files)
        eval_size=0,                     # validation questions evaluated per eval set (0 = all; the papers use 512)
        heldout_size=0,                  # held-out questions evaluated per set (0 = all)
        mixture="",                      # GRPO prompts: "source:weight,..." over the train records; "" = uniform
    ))
    c.search = ml_collections.ConfigDict(dict(
        retriever="",                    # "" = BM25 over the world corpus; else a make_retriever spec
        topk=3, max_chars_per_doc=300,
    ))
    # The sandboxed Python tool, built when the format offers it (hermes); see atomsearch_jax/tools.
    c.code_interpreter = ml_collections.ConfigDict(dict(
        timeout_s=10.0, cpu_s=10, memory_mb=1024, max_processes=32, max_output_bytes=8192, max_workers=16,
        allow_unsandboxed=False,         # True runs model code with rlimits only when namespaces are unavailable
    ))
    # Model: a Qwen2.5 checkpoint directory, or a fresh tiny Qwen2.5-shaped model (vocab from the tokenizer).
    c.model = ml_collections.ConfigDict(dict(
        hf_path="", tokenizer_path="", dtype="float32",
        preset="",                       # architecture for the memory planner when hf_path has no config.json
        hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2,
        rope_theta=10000.0, max_len=704,
        # The output head shares the token embedding (as Qwen2.5 0.5B-3B). Tied, copying a name from the context
        # needs one shared map instead of an output row learnt per name (untied: 8% of teacher-forced validation
        # plans name the question's entity at step 480 of a 720-step schedule; scripts/sft_copy_probe.py).
        tie_word_embeddings=True,
        scan_layers=False,               # train with the layers under one lax.scan (big models; the sampler unrolls)
        # auto | reference | blockwise | dot_product | pallas | cpu_flash (model/attention.py). On CPU "auto"
        # trains rows of >= 384 tokens with cpu_flash (C++ flash attention: SFT / GRPO steps at widths 672 / 704
        # 1.06x / 1.22x faster than the reference kernel, scripts/bench_sft_attention.py) and decodes with the
        # reference kernel.
        attention="auto",
        # Key-block size of the blockwise kernel (slots); "auto" uses the whole-score reference kernel when a
        # row's T x S scores fit in block**2: every decode step of this job, whose sequences fit in 1024 slots.
        # The paper-scale configs set their own (512).
        attention_block=1024,
        # Dense products: "auto" runs float32 products through OpenBLAS on a single-device CPU process
        # (kernels/blas_matmul.py), XLA's dot elsewhere; "xla" | "blas" force one.
        matmul="auto",
    ))

    c.sft = sft.get_config()
    # The copy of the question's entity forms late: greedy validation plans name it in 0% at steps 240 and 360
    # of a 480-step schedule, 12% at 480 (validation F1 0.12, about what answering a frequent country scores);
    # 24% at steps 720 / 840 / 960 of a 960-step schedule (F1 0.31 / 0.29 / 0.29), and a plan that names it is
    # followed to the right answer 23-24 times of 24 (scripts/sft_failure_points.py, BENCHMARKS.md).
    c.sft.steps = 720
    c.sft.batch_size = 8
    c.sft.length_buckets = 2              # teacher trajectories are bimodal (2-hop / 3-hop): one width each
    c.sft.optimizer.learning_rate = 5e-3     # tuned on the validation split (BENCHMARKS.md, scripts/tune_sft.py)
    c.sft.optimizer.warmup_steps = 40
    c.sft.optimizer.schedule = "cosine"
    c.sft.optimizer.total_steps = 720
    c.sft.optimizer.final_lr_ratio = 0.1
    c.sft.checkpoint.save_interval_steps = 120
    # Gradients of 2 rows at a time (accumulated; the same update up to float summation order): at hidden 128
    # the [rows, heads, T, T] attention scores of 2 rows stay in cache. SFT steps 1.4x and GRPO updates 2.8x
    # faster than the whole batch at once (scripts/bench_grpo_micro.py, BENCHMARKS.md). On a mesh of more data x
    # fsdp devices it is rounded up to one row per device.
    c.sft.train_step.micro_batch_size = 2
    # Two copies of every teacher trajectory with the world's names permuted (data/world/counterfactual.py):
    # their facts contradict the world, so only reading the question and the search results predicts them.
    c.sft.world_counterfactual_copies = 2
    # ... renamed word by word (first names among first names, title nouns among title nouns, ...), so a renamed
    # name is a new combination of known words. Renamed whole, every name in the SFT data is one the policy can
    # complete from memory once it has copied the first word; on a question about an entity SFT never saw, it
    # then copied the first word and recalled another name's second ("Distant Mirror" for Distant Storm):
    # held-out F1 after SFT 0.148 / 0.136 whole, 0.593 / 0.623 word by word (seeds 0 / 1; BENCHMARKS.md,
    # "Counterfactual copies renamed word by word").
    c.sft.world_counterfactual_words = True
    # A teacher that stops early in 60% of its trajectories: it plans only the first hop and answers the bridge
    # entity (wrong by construction), as distilled agent data that under-searches does. The SFT policy then
    # answers after one search when greedy, while 7-21 of the 64 rollouts of GRPO's first update search on
    # (seeds 0-2): a decision that groups sample both ways, at the same point of every question, with the
    # reward telling them apart. With a faithful teacher GRPO had nothing of that kind to learn: its batch gradients
    # of 64 rollouts were uncorrelated (pair cosine 0.0003 +- 0.048; scripts/grpo_gradient_snr.py) and held-out
    # F1 moved +0.000 +- 0.017 over three seeds. Validation F1 (n = 101) 0.000 after SFT, 0.213 after 10 GRPO
    # updates; the sentence-answer teacher at 0.6 instead: 0.238 -> 0.234 (BENCHMARKS.md, "A teacher that
    # stops searching early, again").
    c.sft.world_early_answer_fraction = 0.6
    # SFT data: trajectory files (comma-separated jsonl/parquet of chat messages, e.g. from
    # `python -m atomsearch_jax.make_sft_data`), else the synthetic world's built-in teacher.
    c.sft.trajectory_files = ""
    c.sft.system_prompt = "format"       # format: train behind the format's own prompt (as RL prompts); file: the file's

    c.rl = rl.get_config()
    # 30 updates: from the same SFT policies, held-out GRPO - SFT F1 +0.451 / +0.350 / +0.046 after 20 updates
    # and +0.477 / +0.352 / +0.097 after 30 (seeds 0-2; BENCHMARKS.md, "The default job end to end").
    c.rl.steps = 30
    c.rl.prompts_per_step = 8
    c.rl.group_size = 8
    c.rl.optimizer.learning_rate = 1e-4
    c.rl.optimizer.warmup_steps = 0
    c.rl.update_widths = (384, 512, 704)   # update batches padded to one of these: one compile each
    c.rl.train_step.micro_batch_size = 2     # see c.sft.train_step.micro_batch_size
    c.rl.loss.eps_low, c.rl.loss.eps_high = 0.2, 0.28
    c.rl.loss.kl_coef = 0.0
    # Dr. GRPO advantages (reward - group mean, no division by the group's std). Most groups of this policy
    # answer alike (2.7 of 8 per update on average tell a right answer from a wrong one) and differ only by
    # the process reward; dividing by their small std made those differences full-size advantages, and
    # validation F1 fell from 0.272 after SFT to 0.208 after 20 updates. Without the division: 0.282 at
    # updates 5-20; held-out GRPO - SFT over three seeds -0.019 against -0.029 with it (BENCHMARKS.md,
    # "GRPO's advantages: the group std").
    c.rl.normalize_std = False
    c.rl.rollout.update(
        max_response_tokens=576, segment_steps=144, max_tool_calls=6, top_p=1.0, top_k=0,
        # The papers sample at 1.0; a ~1M-parameter policy at 1.0 breaks the format in ~3 of 4 samples
        # (measured), which leaves GRPO almost no signal, so the toy default samples at 0.8.
        temperature=0.8)
    # Reward keys and their defaults: atomsearch_jax.rl.config.reward_config (judge, overlong shaping, ...);
    # failure thresholds that stop a run: c.rl.failures (rl.config.failures_config).
    c.rl.reward.update(
        outcome="",                      # "" = the format's own (deepresearcher / research / search_r1_em)
        judge="oracle",                  # oracle (world only) | http | model | none
        schedule="linear", alpha0=0.5, atr_mode="mean", malformed_policy="penalty",
    )
    c.rl.reward.overlong.update(max_length=0, cache_length=0)   # DAPO overlong shaping off in the toy
    # Validation (eval_records) every `every` GRPO updates; held-out questions before training, after SFT and
    # after GRPO. rows_per_batch: 236 held-out questions go in two batches of the engine's 128-row bucket.
    c.eval = ml_collections.ConfigDict(dict(
        every=10, temperature=0.0, n=1,  # n sampled runs per question (avg@n, pass@k, maj@n when > 1)
        initial=True,                    # evaluate the policy before training too
        rows_per_batch=128,              # rollouts per engine batch
        log_trajectories=2,              # full trajectories written per validation (workdir/eval_trajectories.jsonl)
        # LLM judge of final answers ("LJ"): an OpenAI-compatible server; "" = no judge.
        judge_url="", judge_model="", judge_api_key_env="", judge_prompt_version="answer_judge_v1",
        judge_max_attempts=4, judge_timeout_s=60.0,
    ))
    c.report = ml_collections.ConfigDict(dict(samples_every=5))   # <workdir>/samples/ every N updates (+ the 1st)
    c.export_hf = True
    return c
