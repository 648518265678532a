// Few-row float32 products for XLA:CPU FFI handlers: the loops decoding runs its 1-8-row products with, and
// the chunk queue that splits them over XLA's intra-op threads. Included by blas_matmul.cc (the dense
// products) and greedy_head.cc (the LM head's greedy token, whose exact check must add in these loops' order).
#ifndef ATOMSEARCH_KERNELS_FEW_ROWS_H_
#define ATOMSEARCH_KERNELS_FEW_ROWS_H_

#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ATOMSEARCH_HAVE_FEW_ROWS 1
#include <immintrin.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

// ---- splitting a product over XLA's intra-op threads ----
//
// XLA runs independent ops of a step at once on its intra-op threads; threads of our own on top of them
// oversubscribed the cores (and starting one per product cost ~50 us). The work is cut into chunks that
// the calling thread and tasks on XLA's pool claim from a shared counter: a task that XLA starts late (its
// threads busy with another op) finds fewer chunks or none left, and the caller only ever waits for chunks
// another thread is already running.
namespace parallel {

constexpr int64_t kMinChunkElements = int64_t{1} << 18;  // weight elements per chunk at least
constexpr int64_t kChunksPerThread = 4;                   // so that a late task still finds work

// How a product's work is cut: `extent` columns or rows of a weight of `elements` elements, in chunks of
// `size` (a multiple of the caller's alignment), over `threads` threads.
struct Plan {
  int64_t threads, chunks, size;
};

// Threads a product may use: XLA's intra-op pool, at most one per core.
inline int64_t Threads(ffi::ThreadPool& pool) {
  return std::min<int64_t>(pool.num_threads(), std::max(1u, std::thread::hardware_concurrency()));
}

inline Plan PlanChunks(ffi::ThreadPool& pool, int64_t extent, int64_t elements, int64_t align) {
  const int64_t threads = Threads(pool);
  const int64_t blocks = (extent + align - 1) / align;
  int64_t wanted = std::min({blocks, std::max<int64_t>(1, elements / kMinChunkElements),
                             std::max<int64_t>(1, threads) * kChunksPerThread});
  // A whole number of chunks per thread: 3 chunks on 2 threads left one thread with two thirds of the
  // q/o products (0.8M elements), which then ran at 22 GB/s.
  if (threads > 1 && blocks >= threads) wanted = std::max(threads, wanted / threads * threads);
  const int64_t size = (blocks + wanted - 1) / wanted * align;
  return {threads, (extent + size - 1) / size, size};
}

// The chunks of one product, claimed from a shared counter by the caller (slot 0) and by pool tasks (slots
// 1 .. threads - 1). A task that arrives after every slot or chunk is taken returns without calling chunk.
struct Queue {
  std::atomic<int64_t> next{0}, done{0}, slots{1};
  int64_t chunks = 0, threads = 1;
  const std::function<void(int64_t, int64_t)>* chunk = nullptr;

  void Drain(int64_t slot) {
    if (slot >= threads) return;  // slots index per-thread buffers (SumOverRows)
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      (*chunk)(slot, c);
      done.fetch_add(1, std::memory_order_release);
    }
  }
  void Join() { Drain(slots.fetch_add(1, std::memory_order_relaxed)); }
};

// A pool task woken for a product started 15-56 us after the call (medians by product in a decode step of
// Qwen2.5-0.5B under KVM, scripts/profile_decode.py), against 100-150 us for its attention or q/k/v product:
// so a task that has drained its queue stays awake for kLinger, taking the chunks of the queues posted
// meanwhile (the step's next products, a few us apart). At most threads - 1 tasks linger, so the caller's
// core stays free. The posting is process-wide (a function-local static of an inline function is one object
// across the handler libraries), so a product of one library finds the task another left.
struct Posting {
  std::mutex mu;                       // guards queue
  std::shared_ptr<Queue> queue;        // the newest posted product, while its caller runs it
  std::atomic<uint64_t> generation{0}; // bumped on each post
  std::atomic<int64_t> lingering{0};   // tasks in Linger

  void JoinNewest() {
    std::shared_ptr<Queue> newest;
    {
      std::lock_guard<std::mutex> lock(mu);
      newest = queue;
    }
    if (newest) newest->Join();
  }
};

inline Posting& Posted() {
  static Posting posting;
  return posting;
}

constexpr auto kLinger = std::chrono::microseconds(200);

inline void Linger(int64_t threads) {
  Posting& posting = Posted();
  if (posting.lingering.fetch_add(1) >= threads - 1) {
    posting.lingering.fetch_sub(1);
    return;
  }
  uint64_t seen = posting.generation.load();
  auto deadline = std::chrono::steady_clock::now() + kLinger;
  while (std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 16; ++i) _mm_pause();
    const uint64_t generation = posting.generation.load();
    if (generation == seen) continue;
    seen = generation;
    posting.JoinNewest();
    deadline = std::chrono::steady_clock::now() + kLinger;
  }
  posting.lingering.fetch_sub(1);
  // A product posted just now may have counted this task and scheduled none: RunChunks posts, then reads
  // `lingering`; this task leaves `lingering`, then reads the generation (both sequentially consistent), so
  // one of the two sees the other.
  if (posting.generation.load() != seen) posting.JoinNewest();
}

// Runs chunk(slot, c) once for each c in [0, plan.chunks): on the caller (slot 0) and on up to plan.threads - 1
// pool tasks (lingering ones first, then new ones), which claim chunks from a shared counter; returns when
// every chunk has returned. A task may start after this call returned: it holds the queue, finds no chunk
// left and calls nothing.
inline void RunChunks(ffi::ThreadPool& pool, const Plan& plan, const std::function<void(int64_t, int64_t)>& chunk) {
  auto queue = std::make_shared<Queue>();
  queue->chunks = plan.chunks;
  queue->threads = plan.threads;
  queue->chunk = &chunk;
  Posting& posting = Posted();
  {
    std::lock_guard<std::mutex> lock(posting.mu);
    posting.queue = queue;
  }
  posting.generation.fetch_add(1);
  const int64_t threads = plan.threads;
  for (int64_t t = 1 + posting.lingering.load(); t < threads; ++t) {
    pool.Schedule([queue, threads] {
      queue->Join();
      Linger(threads);
    });
  }
  queue->Drain(0);
  while (queue->done.load(std::memory_order_acquire) != queue->chunks) _mm_pause();
  std::lock_guard<std::mutex> lock(posting.mu);
  if (posting.queue == queue) posting.queue.reset();
}

// Runs columns(n0, n1) over [0, n) of a weight of n * k elements, in chunks of a multiple of `align` columns.
inline void Columns(ffi::ThreadPool& pool, int64_t n, int64_t k, int64_t align,
                    const std::function<void(int64_t, int64_t)>& columns) {
  const Plan plan = PlanChunks(pool, n, n * k, align);
  if (plan.threads <= 1 || plan.chunks <= 1) {
    columns(0, n);
    return;
  }
  RunChunks(pool, plan, [&](int64_t, int64_t c) { columns(c * plan.size, std::min(n, (c + 1) * plan.size)); });
}

// The chunks SumOverRows cuts the k rows of a weight [k, n] into: one chunk of all k rows when it runs on
// one thread.
inline Plan RowPlan(ffi::ThreadPool& pool, int64_t k, int64_t n, int64_t align) {
  const Plan plan = PlanChunks(pool, k, n * k, align);
  return plan.threads <= 1 || plan.chunks <= 1 ? Plan{1, 1, k} : plan;
}

// Runs rows(out, k0, k1), which writes the weight rows [k0, k1)'s share of the product into `out`, over the
// rows [0, k) of a weight [k, n] in RowPlan's chunks. Each chunk writes its own partial sum (chunk 0 into y, of
// y_size floats), and the partials are then added into y in chunk order: so y depends on the plan alone,
// never on which thread ran which chunk (a thread summing its chunks into one buffer made decode's float32
// outputs vary from run to run with the pool's timing). A chunk of whole weight rows is one contiguous stretch
// of memory.
inline void SumOverRows(ffi::ThreadPool& pool, int64_t k, int64_t n, int64_t align, float* y, int64_t y_size,
                        const std::function<void(float*, int64_t, int64_t)>& rows) {
  const Plan plan = RowPlan(pool, k, n, align);
  if (plan.chunks == 1) {
    rows(y, 0, k);
    return;
  }
  thread_local std::vector<float> scratch;
  scratch.resize(std::max<size_t>(scratch.size(), static_cast<size_t>((plan.chunks - 1) * y_size)));
  float* const partials = scratch.data();  // chunk c >= 1 at partials + (c - 1) * y_size
  RunChunks(pool, plan, [&](int64_t, int64_t c) {
    rows(c == 0 ? y : partials + (c - 1) * y_size, c * plan.size, std::min(k, (c + 1) * plan.size));
  });
  for (int64_t c = 1; c < plan.chunks; ++c) {
    const float* partial = partials + (c - 1) * y_size;
    for (int64_t i = 0; i < y_size; ++i) y[i] += partial[i];
  }
}

}  // namespace parallel

constexpr int64_t kMaxRows = 8;  // one accumulator register per row in both loops

// ---- few-row products against a weight read transposed (y = x w^T, w [N, K] row-major) ----
//
// sgemm packs every panel of w into a buffer before multiplying: for a handful of rows that copy costs as
// much as the product, so the tied LM head at decode ([8, 896] x [151936, 896]^T) ran at ~8 GB/s of weight
// (67 ms). Here each weight row is read once, straight from memory, and dotted with all (up to 8) rows of x
// held in L1: one accumulator register per row, the weight row kPrefetchRows ahead prefetched past the caches
// (non-temporal, so the streaming weight does not evict x), the columns split over the threads: 34 ms.
namespace skinny {

constexpr int64_t kPrefetchRows = 8;    // weight rows ahead (2-16 ran within noise of each other on the LM head)

__attribute__((target("avx2,fma"))) inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  return _mm_cvtss_f32(_mm_add_ss(lo, _mm_movehdup_ps(lo)));
}

// y[r, j] for the R rows of x and one weight row j.
template <int R>
__attribute__((target("avx2,fma"))) inline void DotRows(const float* x, const float* wj, const float* prefetch,
                                                         float* y, int64_t k, int64_t n, int64_t j) {
  __m256 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const int64_t k16 = k / 16 * 16;
  for (int64_t p = 0; p < k16; p += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(prefetch + p), _MM_HINT_NTA);
    const __m256 w0 = _mm256_loadu_ps(wj + p), w1 = _mm256_loadu_ps(wj + p + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * k + p), w0, acc[r]);
      acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * k + p + 8), w1, acc[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float s = HorizontalSum(acc[r]);
    for (int64_t p = k16; p < k; ++p) s += x[r * k + p] * wj[p];
    y[r * n + j] = s;
  }
}

template <int R>
__attribute__((target("avx2,fma"))) inline void DotRowsAt(const float* x, const float* w, float* y, int64_t k, int64_t n,
                                                    int64_t j) {
  DotRows<R>(x, w + j * k, w + std::min(j + kPrefetchRows, n - 1) * k, y, k, n, j);
}

// Columns [n0, n1) of y for its m <= kMaxRows rows.
__attribute__((target("avx2,fma"))) inline void Columns(const float* x, const float* w, float* y, int64_t m, int64_t k,
                                                 int64_t n, int64_t n0, int64_t n1) {
  using Fn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t);
  static constexpr Fn kByRows[kMaxRows + 1] = {nullptr, DotRowsAt<1>, DotRowsAt<2>, DotRowsAt<3>, DotRowsAt<4>,
                                               DotRowsAt<5>, DotRowsAt<6>, DotRowsAt<7>, DotRowsAt<8>};
  const Fn dot = kByRows[m];
  for (int64_t j = n0; j < n1; ++j) dot(x, w, y, k, n, j);
}

inline bool Supported(int64_t m) {
  return m >= 1 && m <= kMaxRows && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// y [m, n] = x [m, k] w^T for w [n, k].
inline void Multiply(ffi::ThreadPool& pool, const float* x, const float* w, float* y, int64_t m, int64_t k, int64_t n) {
  parallel::Columns(pool, n, k, 1, [&](int64_t n0, int64_t n1) { Columns(x, w, y, m, k, n, n0, n1); });
}

}  // namespace skinny

// ---- few-row products against a weight stored [K, N] (y = x w, every layer's weight at decode) ----
//
// XLA's dot read these weights at ~22-28 GB/s in decoding's 8-row products, sgemm at ~9 (packing again).
// Here the columns go 16 at a time: the R accumulators of a 16-column group stay in registers for
// kBlockRows weight rows (each row's 64 bytes times R broadcast values of x) and in y between blocks, and
// the group's lines of the next block are prefetched, since kBlockRows streams a row apart defeat the
// hardware prefetchers (7 GB/s without). Work is split over threads by weight rows, each thread summing into
// its own copy of y, when that copy fits in L1 (48 KB here; down [4864, 896]: whole rows are contiguous memory),
// else by columns (gate/up [896, 9728]). Two groups at a time (fewer broadcasts) and longer blocks ran no faster.
namespace stored {

constexpr int64_t kBlockRows = 8;
constexpr int64_t kMaxRowSplitOutput = 40 << 10;  // bytes of y for which threads split the weight's rows

// Adds x[:, k0:k1] w[k0:k1, n0:n1] into y[:, n0:n1] of y [R, n] (writes it when `first`); the last 16-column
// group is masked.
template <int R>
__attribute__((target("avx512f"))) inline void Block(const float* x, const float* w, float* y, bool first, int64_t k,
                                              int64_t n, int64_t k0, int64_t k1, int64_t n0, int64_t n1) {
  const int64_t groups = (n1 - n0 + 15) / 16;
  const __mmask16 last = (n1 - n0) % 16 ? static_cast<__mmask16>((1u << ((n1 - n0) % 16)) - 1) : __mmask16{0xFFFF};
  for (int64_t p0 = k0; p0 < k1; p0 += kBlockRows) {
    const int64_t rows = std::min(kBlockRows, k1 - p0), ahead = std::min(kBlockRows, k1 - p0 - rows);
    const bool zero = first && p0 == k0;
    const float* wb = w + p0 * n + n0;
    for (int64_t g = 0; g < groups; ++g) {
      const __mmask16 mask = g == groups - 1 ? last : __mmask16{0xFFFF};
      float* yg = y + n0 + g * 16;
      __m512 acc[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = zero ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, yg + r * n);
      for (int64_t q = 0; q < ahead; ++q) {
        _mm_prefetch(reinterpret_cast<const char*>(wb + (kBlockRows + q) * n + g * 16), _MM_HINT_T0);
      }
      for (int64_t q = 0; q < rows; ++q) {
        const __m512 wq = _mm512_maskz_loadu_ps(mask, wb + q * n + g * 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * k + p0 + q]), wq, acc[r]);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(yg + r * n, mask, acc[r]);
    }
  }
}

inline bool Supported(int64_t m) { return m >= 1 && m <= kMaxRows && __builtin_cpu_supports("avx512f"); }

using BlockFn = void (*)(const float*, const float*, float*, bool, int64_t, int64_t, int64_t, int64_t, int64_t,
                        int64_t);

// Block<m> for 1 <= m <= kMaxRows.
inline BlockFn BlockFor(int64_t m) {
  static constexpr BlockFn kByRows[kMaxRows + 1] = {nullptr, Block<1>, Block<2>, Block<3>, Block<4>,
                                                    Block<5>, Block<6>, Block<7>, Block<8>};
  return kByRows[m];
}

// Whether threads split the weight rows of a product with outputs [m, n] (else its columns).
inline bool SplitsRows(int64_t m, int64_t n) {
  return m * n * static_cast<int64_t>(sizeof(float)) <= kMaxRowSplitOutput;
}

// The weight rows per partial sum of a product with outputs [m, n] and w [k, n]: Multiply's y is the sum, in
// order, of the fma chains over rows [0, s), [s, 2s), ... (s = k: one chain over all rows).
inline int64_t SummedRows(ffi::ThreadPool& pool, int64_t m, int64_t k, int64_t n) {
  return SplitsRows(m, n) ? parallel::RowPlan(pool, k, n, kBlockRows).size : k;
}

// y [m, n] = x [m, k] w for w [k, n].
inline void Multiply(ffi::ThreadPool& pool, const float* x, const float* w, float* y, int64_t m, int64_t k, int64_t n) {
  const BlockFn block = BlockFor(m);
  if (SplitsRows(m, n)) {
    parallel::SumOverRows(pool, k, n, kBlockRows, y, m * n, [&](float* out, int64_t k0, int64_t k1) {
      block(x, w, out, true, k, n, k0, k1, 0, n);
    });
  } else {
    parallel::Columns(pool, n, k, 16, [&](int64_t n0, int64_t n1) { block(x, w, y, true, k, n, 0, k, n0, n1); });
  }
}

}  // namespace stored
#endif

#endif  // ATOMSEARCH_KERNELS_FEW_ROWS_H_
