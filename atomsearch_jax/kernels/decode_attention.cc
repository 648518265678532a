// Attention of a few new queries over a KV cache (decoding) on XLA:CPU, as a typed-FFI handler.
//
// While decoding, XLA:CPU ran each layer's attention (one query per row against a cache window) as ~10 ops:
// two small batched products, a masked max, exp, sums, a division and transposes, ~150 us a layer for
// Qwen2.5-0.5B at batch 8 over 192 slots, against ~35 us to read that window's keys and values once. Here
// each (row, kv head, query) item reads its keys and values once: the G query heads of the kv head are
// the lanes of one AVX2 vector (G <= 8), so a score costs D fused multiply-adds and no horizontal sum, then
// softmax and the value sum run over the visible slots only. Items split over XLA's intra-op threads.
//
// Shapes: q [B, T, H, D], k and v [B, K, S, D] (the cache, heads-major), q_slots [B, T] int32; out
// [B, T, H, D]. Query head h = kv * G + g. Query (b, t) sees the slots s <= q_slots[b, t] (as KeyMask with no
// padding keys); one that sees none averages all S values (the reference kernel's uniform softmax over its
// finite mask value).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "few_rows.h"
#include "vector_math.h"

#ifdef ATOMSEARCH_HAVE_FEW_ROWS
namespace {

constexpr int64_t kMaxGroup = 8;   // query heads per kv head: the lanes of one AVX2 vector
constexpr int64_t kKeysAtOnce = 8; // independent score accumulators (the FMA latency chain over D)
constexpr int64_t kPrefetchKeys = 8;  // keys ahead whose lines are prefetched

struct Shape {
  int64_t b, t, h, kv, s, d, g;
};

template <class A, class B>
bool SameDims(const A& a, const B& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

// Scores [n][8] of the G query heads (lanes, pre-scaled) against keys 0..n-1 of one kv head: qt [D][8].
__attribute__((target("avx2,fma"))) void Scores(const float* qt, const float* keys, const float* values, int64_t n,
                                                int64_t d, float* scores) {
  int64_t s = 0;
  for (; s + kKeysAtOnce <= n; s += kKeysAtOnce) {
    // The block's keys are read a column at a time, across kKeysAtOnce rows: hardware prefetchers do not
    // follow that, and the cache arrives cold from the previous step (cold, this loop ran 3.5x slower).
    // The values of these keys are fetched on the way too (into L2), for WeightedValues.
    const int64_t ahead = std::min(s + kPrefetchKeys, n - 1) * d;
    for (int64_t line = 0; line < kKeysAtOnce * d && ahead + line < n * d; line += 16) {
      _mm_prefetch(reinterpret_cast<const char*>(keys + ahead + line), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(values + ahead + line), _MM_HINT_T1);
    }
    __m256 acc[kKeysAtOnce];
    for (int i = 0; i < kKeysAtOnce; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t c = 0; c < d; ++c) {
      const __m256 q = _mm256_loadu_ps(qt + 8 * c);
#pragma GCC unroll 8
      for (int i = 0; i < kKeysAtOnce; ++i) {
        acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(keys + (s + i) * d + c), q, acc[i]);
      }
    }
    for (int i = 0; i < kKeysAtOnce; ++i) _mm256_storeu_ps(scores + 8 * (s + i), acc[i]);
  }
  for (; s < n; ++s) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t c = 0; c < d; ++c) {
      acc = _mm256_fmadd_ps(_mm256_broadcast_ss(keys + s * d + c), _mm256_loadu_ps(qt + 8 * c), acc);
    }
    _mm256_storeu_ps(scores + 8 * s, acc);
  }
}

// out[g][0..D) = sum_s p[s][g] values[s] / total[g] for the G heads: each value row is read once for all
// heads, 32 dims at a time (2 AVX-512 accumulators per head; one accumulator per dims chunk per head with
// the chunks in memory ran 4x slower).
template <int G>
__attribute__((target("avx512f"))) void WeightedValues(const float* p, const float* total, const float* values,
                                                       int64_t n, int64_t d, float* out, int64_t head_stride) {
  for (int64_t d0 = 0; d0 < d; d0 += 32) {
    const __mmask16 hi = d - d0 >= 32 ? __mmask16{0xFFFF} : __mmask16{0};  // D is a multiple of 16
    __m512 lo_acc[G], hi_acc[G];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) lo_acc[g] = hi_acc[g] = _mm512_setzero_ps();
    for (int64_t s = 0; s < n; ++s) {
      const float* row = values + s * d + d0;
      const __m512 lo = _mm512_loadu_ps(row), up = _mm512_maskz_loadu_ps(hi, row + 16);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
        const __m512 weight = _mm512_set1_ps(p[8 * s + g]);
        lo_acc[g] = _mm512_fmadd_ps(weight, lo, lo_acc[g]);
        hi_acc[g] = _mm512_fmadd_ps(weight, up, hi_acc[g]);
      }
    }
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      const __m512 inverse = _mm512_set1_ps(1.f / total[g]);
      _mm512_storeu_ps(out + g * head_stride + d0, _mm512_mul_ps(lo_acc[g], inverse));
      _mm512_mask_storeu_ps(out + g * head_stride + d0 + 16, hi, _mm512_mul_ps(hi_acc[g], inverse));
    }
  }
}

using ValuesFn = void (*)(const float*, const float*, const float*, int64_t, int64_t, float*, int64_t);
constexpr ValuesFn kValuesByGroup[kMaxGroup + 1] = {nullptr, WeightedValues<1>, WeightedValues<2>, WeightedValues<3>,
                                                    WeightedValues<4>, WeightedValues<5>, WeightedValues<6>,
                                                    WeightedValues<7>, WeightedValues<8>};

// One (row b, kv head, query t) item.
__attribute__((target("avx2,fma,avx512f"))) void Item(const Shape& sh, const float* q, const float* k, const float* v,
                                              const int32_t* q_slots, float* out, int64_t item,
                                              std::vector<float>& scratch) {
  const int64_t t = item % sh.t, kv = item / sh.t % sh.kv, b = item / (sh.t * sh.kv);
  const int64_t slot = q_slots[b * sh.t + t];
  const bool sees_none = slot < 0;
  const int64_t n = sees_none ? sh.s : std::min<int64_t>(slot + 1, sh.s);
  scratch.assign(8 * sh.d + 8 * n, 0.f);
  float* qt = scratch.data();  // [D][8]: the G heads' queries, scaled, as lanes
  float* scores = qt + 8 * sh.d;
  const float scale = 1.f / std::sqrt(static_cast<float>(sh.d));
  const int64_t heads = ((b * sh.t + t) * sh.h + kv * sh.g) * sh.d;  // offset of the G heads in q and out
  const float* qb = q + heads;
  for (int64_t g = 0; g < sh.g; ++g) {
    for (int64_t c = 0; c < sh.d; ++c) qt[8 * c + g] = qb[g * sh.d + c] * scale;
  }
  const int64_t cache = (b * sh.kv + kv) * sh.s * sh.d;
  if (sees_none) {
    std::fill(scores, scores + 8 * n, 0.f);  // a uniform softmax over every slot
  } else {
    Scores(qt, k + cache, v + cache, n, sh.d, scores);
  }
  __m256 top = _mm256_set1_ps(-INFINITY);
  for (int64_t s = 0; s < n; ++s) top = _mm256_max_ps(top, _mm256_loadu_ps(scores + 8 * s));
  __m256 sum = _mm256_setzero_ps();
  for (int64_t s = 0; s < n; ++s) {
    const __m256 p = vector_math::Exp(_mm256_sub_ps(_mm256_loadu_ps(scores + 8 * s), top));
    _mm256_storeu_ps(scores + 8 * s, p);
    sum = _mm256_add_ps(sum, p);
  }
  alignas(32) float total[8];
  _mm256_store_ps(total, sum);
  kValuesByGroup[sh.g](scores, total, v + cache, n, sh.d, out + heads, sh.d);
}

ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                           ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> q_slots, ffi::ResultBuffer<ffi::F32> out) {
  const auto qd = q.dimensions(), kd = k.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || !SameDims(v.dimensions(), kd) || !SameDims(out->dimensions(), qd) ||
      q_slots.dimensions().size() != 2) {
    return ffi::Error::InvalidArgument("atomsearch_decode_attention: q, out [B,T,H,D]; k, v [B,K,S,D]; slots [B,T]");
  }
  const Shape sh{qd[0], qd[1], qd[2], kd[1], kd[2], qd[3], kd[1] ? qd[2] / kd[1] : 0};
  if (kd[0] != sh.b || kd[3] != sh.d || sh.kv == 0 || sh.h % sh.kv || sh.g > kMaxGroup || sh.d % 16 ||
      q_slots.dimensions()[0] != sh.b || q_slots.dimensions()[1] != sh.t) {
    return ffi::Error::InvalidArgument("atomsearch_decode_attention: shapes do not agree (H = K * G with G <= 8, "
                                       "D a multiple of 16)");
  }
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("avx512f")) {
    return ffi::Error::InvalidArgument("atomsearch_decode_attention: this CPU lacks AVX2, FMA or AVX512F");
  }
  const int64_t items = sh.b * sh.kv * sh.t;
  if (items == 0 || sh.s == 0) return ffi::Error::Success();
  // Items are small and alike: a few per thread (PlanChunks sizes chunks by weight elements, not items).
  const int64_t threads = parallel::Threads(pool);
  const int64_t chunks = std::min<int64_t>(items, std::max<int64_t>(1, threads) * 2);
  const parallel::Plan plan{threads, chunks, (items + chunks - 1) / chunks};
  const auto run = [&](int64_t first, int64_t last) {
    thread_local std::vector<float> scratch;
    for (int64_t item = first; item < last; ++item) {
      Item(sh, q.typed_data(), k.typed_data(), v.typed_data(), q_slots.typed_data(), out->typed_data(), item, scratch);
    }
  };
  if (threads <= 1 || chunks <= 1) {
    run(0, items);
  } else {
    parallel::RunChunks(pool, plan, [&](int64_t, int64_t c) {
      run(c * plan.size, std::min(items, (c + 1) * plan.size));
    });
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AtomsearchDecodeAttention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
#endif
