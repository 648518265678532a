// Causal self-attention for training on XLA:CPU (forward and backward), flash-style, as typed-FFI handlers.
//
// XLA:CPU runs the reference kernel's [B, K, G, T, T] float32 scores as separate passes (scale, mask, max,
// exp, sum, two products), each over a tensor bigger than the caches: at the default job's shapes (hidden 128,
// head dim 32, 2 rows of 672-704 tokens) attention took ~60% of a training step. Here each (row, kv head)
// streams its queries in blocks of kQueryBlock against key blocks of kKeyBlock up to the diagonal, with the
// scores of one block pair in L1, an online softmax forward, and the FlashAttention-2 backward (scores
// recomputed from the saved log-sum-exp). The (row, kv head) items split over `threads` threads; the G query
// heads of a kv head run in one item, so dK and dV accumulate without races.
//
// Shapes: q [B, T, H, D], k and v [B, T, K, D], valid [B, T] int32 (0 = padding key), H = K * G (query head
// h = kv * G + g), D a multiple of 8. Query t attends key s iff s <= t and valid[b, s]; a query that attends
// nothing (a row of padding) gets zeros and log-sum-exp +inf, so its backward is zero. lse [B, H, T].
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "vector_math.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ATOMSEARCH_FLASH_TARGET __attribute__((target("avx2,fma")))

namespace flash {

constexpr int64_t kQueryBlock = 32;
constexpr int64_t kKeyBlock = 64;      // 8 AVX2 vectors: one row of scores in registers
constexpr int64_t kKeyVectors = kKeyBlock / 8;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Shape {
  int64_t b, t, h, kv, d, g;
  int64_t QRow() const { return h * d; }   // stride between positions of q, o, dq
  int64_t KvRow() const { return kv * d; } // stride between positions of k, v, dk, dv
};

using vector_math::Exp;

ATOMSEARCH_FLASH_TARGET inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// x[D][t_pad] = the D values of positions 0..t-1 of one kv head (stride `row`), zero past t.
void Transpose(const float* x, int64_t t, int64_t t_pad, int64_t d, int64_t row, float* out) {
  std::memset(out, 0, sizeof(float) * d * t_pad);
  for (int64_t s = 0; s < t; ++s)
    for (int64_t c = 0; c < d; ++c) out[c * t_pad + s] = x[s * row + c];
}

// scores[kKeyBlock] = dot(a, xt[:, s0:s0+kKeyBlock]) for one row a [D] against a transposed block xt [D][t_pad].
ATOMSEARCH_FLASH_TARGET inline void RowTimesBlock(const float* a, const float* xt, int64_t t_pad, int64_t d,
                                                  float* scores) {
  __m256 acc[kKeyVectors];
#pragma GCC unroll 8
  for (int v = 0; v < kKeyVectors; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t c = 0; c < d; ++c) {
    const __m256 ac = _mm256_broadcast_ss(a + c);
    const float* x = xt + c * t_pad;
#pragma GCC unroll 8
    for (int v = 0; v < kKeyVectors; ++v) acc[v] = _mm256_fmadd_ps(ac, _mm256_loadu_ps(x + 8 * v), acc[v]);
  }
#pragma GCC unroll 8
  for (int v = 0; v < kKeyVectors; ++v) _mm256_storeu_ps(scores + 8 * v, acc[v]);
}

// out[D] += sum_c w[c * w_stride] * x[c * row : c * row + D] over c < n (D a multiple of 8, at most 256).
ATOMSEARCH_FLASH_TARGET inline void AddWeightedRows(const float* w, int64_t w_stride, const float* x, int64_t row,
                                                    int64_t n, int64_t d, float* out) {
  for (int64_t c0 = 0; c0 < d; c0 += 32) {
    if (d - c0 >= 32) {  // four vectors in registers
      __m256 a0 = _mm256_loadu_ps(out + c0), a1 = _mm256_loadu_ps(out + c0 + 8);
      __m256 a2 = _mm256_loadu_ps(out + c0 + 16), a3 = _mm256_loadu_ps(out + c0 + 24);
      for (int64_t c = 0; c < n; ++c) {
        const __m256 wv = _mm256_set1_ps(w[c * w_stride]);
        const float* xc = x + c * row + c0;
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xc), a0);
        a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xc + 8), a1);
        a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xc + 16), a2);
        a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xc + 24), a3);
      }
      _mm256_storeu_ps(out + c0, a0), _mm256_storeu_ps(out + c0 + 8, a1);
      _mm256_storeu_ps(out + c0 + 16, a2), _mm256_storeu_ps(out + c0 + 24, a3);
      continue;
    }
    for (int64_t e = c0; e < d; e += 8) {
      __m256 acc = _mm256_loadu_ps(out + e);
      for (int64_t c = 0; c < n; ++c) acc = _mm256_fmadd_ps(_mm256_set1_ps(w[c * w_stride]), _mm256_loadu_ps(x + c * row + e), acc);
      _mm256_storeu_ps(out + e, acc);
    }
  }
}

// Whether every key of each block of kKeyBlock keys is valid (blocks past the row's end are not).
std::vector<char> WholeBlocks(const int32_t* valid, int64_t t) {
  std::vector<char> whole((t + kKeyBlock - 1) / kKeyBlock);
  for (size_t blk = 0; blk < whole.size(); ++blk) {
    const int64_t s0 = blk * kKeyBlock;
    whole[blk] = s0 + kKeyBlock <= t;
    for (int64_t s = s0; whole[blk] && s < s0 + kKeyBlock; ++s) whole[blk] = valid[s] != 0;
  }
  return whole;
}

// Masks the scores of query t (absolute) against keys s0.. : s > t or !valid[s] -> -inf; returns whether the
// query may see any key of the block. Blocks below the diagonal with every key valid need no mask.
inline bool MaskRow(float* scores, int64_t t, int64_t s0, int64_t seq, const int32_t* valid, bool whole) {
  if (whole && s0 + kKeyBlock - 1 <= t) return true;
  bool seen = false;
  for (int64_t c = 0; c < kKeyBlock; ++c) {
    const int64_t s = s0 + c;
    if (s > t || s >= seq || !valid[s]) scores[c] = kNegInf; else seen = true;
  }
  return seen;
}

ATOMSEARCH_FLASH_TARGET inline float RowMax(const float* x) {
  __m256 m = _mm256_loadu_ps(x);
#pragma GCC unroll 8
  for (int v = 1; v < kKeyVectors; ++v) m = _mm256_max_ps(m, _mm256_loadu_ps(x + 8 * v));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}

struct Forward {
  const float *q, *k, *v;
  const int32_t* valid;
  float *o, *lse;
  Shape sh;
  float scale;

  ATOMSEARCH_FLASH_TARGET void Item(int64_t item) const {
    const int64_t b = item / sh.kv, kvh = item % sh.kv, t = sh.t, d = sh.d;
    const int64_t t_pad = (t + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
    const float* kb = k + b * t * sh.KvRow() + kvh * d;
    const float* vb = v + b * t * sh.KvRow() + kvh * d;
    const int32_t* vrow = valid + b * t;
    std::vector<float> kt(d * t_pad), qs(kQueryBlock * d), acc(kQueryBlock * d);
    Transpose(kb, t, t_pad, d, sh.KvRow(), kt.data());
    const std::vector<char> whole = WholeBlocks(vrow, t);
    float scores[kKeyBlock];
    float m[kQueryBlock], l[kQueryBlock];
    for (int64_t g = 0; g < sh.g; ++g) {
      const int64_t head = kvh * sh.g + g;
      for (int64_t i0 = 0; i0 < t; i0 += kQueryBlock) {
        const int64_t rows = std::min(kQueryBlock, t - i0);
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t r = 0; r < rows; ++r) {
          m[r] = kNegInf, l[r] = 0.f;
          const float* qr = q + ((b * t + i0 + r) * sh.h + head) * d;
          for (int64_t c = 0; c < d; ++c) qs[r * d + c] = qr[c] * scale;
        }
        const int64_t last = i0 + rows - 1;
        for (int64_t s0 = 0; s0 <= last; s0 += kKeyBlock) {
          const int64_t keys = std::min(kKeyBlock, t - s0);
          for (int64_t r = 0; r < rows; ++r) {
            RowTimesBlock(qs.data() + r * d, kt.data() + s0, t_pad, d, scores);
            if (!MaskRow(scores, i0 + r, s0, t, vrow, whole[s0 / kKeyBlock])) continue;
            const float block_max = RowMax(scores);
            const float new_max = std::max(m[r], block_max);
            const float rescale = m[r] == kNegInf ? 0.f : std::exp(m[r] - new_max);
            __m256 sum = _mm256_setzero_ps();
            const __m256 shift = _mm256_set1_ps(new_max);
#pragma GCC unroll 8
            for (int vv = 0; vv < kKeyVectors; ++vv) {
              const __m256 p = Exp(_mm256_sub_ps(_mm256_loadu_ps(scores + 8 * vv), shift));
              _mm256_storeu_ps(scores + 8 * vv, p);
              sum = _mm256_add_ps(sum, p);
            }
            l[r] = l[r] * rescale + HorizontalSum(sum);
            m[r] = new_max;
            float* ar = acc.data() + r * d;
            if (rescale != 1.f)
              for (int64_t c = 0; c < d; ++c) ar[c] *= rescale;
            AddWeightedRows(scores, 1, vb + s0 * sh.KvRow(), sh.KvRow(), keys, d, ar);
          }
        }
        for (int64_t r = 0; r < rows; ++r) {
          float* orow = o + ((b * t + i0 + r) * sh.h + head) * d;
          const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
          for (int64_t c = 0; c < d; ++c) orow[c] = acc[r * d + c] * inv;
          lse[(b * sh.h + head) * t + i0 + r] = l[r] > 0.f ? m[r] + std::log(l[r])
                                                            : std::numeric_limits<float>::infinity();
        }
      }
    }
  }
};

struct Backward {
  const float *q, *k, *v, *o, *lse, *dout;
  const int32_t* valid;
  float *dq, *dk, *dv;
  Shape sh;
  float scale;

  ATOMSEARCH_FLASH_TARGET void Item(int64_t item) const {
    const int64_t b = item / sh.kv, kvh = item % sh.kv, t = sh.t, d = sh.d;
    const int64_t t_pad = (t + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
    const int64_t kv_row = sh.KvRow(), q_row = sh.QRow();
    const float* kb = k + b * t * kv_row + kvh * d;
    const float* vb = v + b * t * kv_row + kvh * d;
    const int32_t* vrow = valid + b * t;
    std::vector<float> kt(d * t_pad), vt(d * t_pad), dk_acc(t * d, 0.f), dv_acc(t * d, 0.f), dq_acc(t * d);
    std::vector<float> qs(kQueryBlock * d), delta(kQueryBlock);
    Transpose(kb, t, t_pad, d, kv_row, kt.data());
    Transpose(vb, t, t_pad, d, kv_row, vt.data());
    const std::vector<char> whole = WholeBlocks(vrow, t);
    float p[kQueryBlock * kKeyBlock], ds[kQueryBlock * kKeyBlock], dp[kKeyBlock];
    for (int64_t g = 0; g < sh.g; ++g) {
      const int64_t head = kvh * sh.g + g;
      std::fill(dq_acc.begin(), dq_acc.end(), 0.f);
      for (int64_t i0 = 0; i0 < t; i0 += kQueryBlock) {
        const int64_t rows = std::min(kQueryBlock, t - i0);
        const float* lse_h = lse + (b * sh.h + head) * t + i0;
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t at = ((b * t + i0 + r) * sh.h + head) * d;
          float dot = 0.f;
          for (int64_t c = 0; c < d; ++c) qs[r * d + c] = q[at + c] * scale, dot += dout[at + c] * o[at + c];
          delta[r] = dot;
        }
        const int64_t last = i0 + rows - 1;
        for (int64_t s0 = 0; s0 <= last; s0 += kKeyBlock) {
          const int64_t keys = std::min(kKeyBlock, t - s0);
          for (int64_t r = 0; r < rows; ++r) {
            float* pr = p + r * kKeyBlock;
            float* dsr = ds + r * kKeyBlock;
            const float lse_r = lse_h[r];
            RowTimesBlock(qs.data() + r * d, kt.data() + s0, t_pad, d, pr);
            if (!MaskRow(pr, i0 + r, s0, t, vrow, whole[s0 / kKeyBlock]) || lse_r == std::numeric_limits<float>::infinity()) {
              std::memset(pr, 0, sizeof(float) * kKeyBlock);
              std::memset(dsr, 0, sizeof(float) * kKeyBlock);
              continue;
            }
            const __m256 shift = _mm256_set1_ps(lse_r);
#pragma GCC unroll 8
            for (int vv = 0; vv < kKeyVectors; ++vv)
              _mm256_storeu_ps(pr + 8 * vv, Exp(_mm256_sub_ps(_mm256_loadu_ps(pr + 8 * vv), shift)));
            const float* dor = dout + ((b * t + i0 + r) * sh.h + head) * d;
            RowTimesBlock(dor, vt.data() + s0, t_pad, d, dp);
            const __m256 dl = _mm256_set1_ps(delta[r]), sc = _mm256_set1_ps(scale);
#pragma GCC unroll 8
            for (int vv = 0; vv < kKeyVectors; ++vv) {
              const __m256 pv = _mm256_loadu_ps(pr + 8 * vv);
              const __m256 grad = _mm256_mul_ps(pv, _mm256_sub_ps(_mm256_loadu_ps(dp + 8 * vv), dl));
              _mm256_storeu_ps(dsr + 8 * vv, _mm256_mul_ps(grad, sc));
            }
            // dq[r] += sum_c ds[r, c] k[s0 + c]
            AddWeightedRows(dsr, 1, kb + s0 * kv_row, kv_row, keys, d, dq_acc.data() + (i0 + r) * d);
          }
          // dv[s0 + c] += sum_r p[r, c] dout[r];  dk[s0 + c] += sum_r ds[r, c] q[r] (unscaled q: ds holds the scale)
          const float* do_block = dout + ((b * t + i0) * sh.h + head) * d;
          const float* q_block = q + ((b * t + i0) * sh.h + head) * d;
          for (int64_t c = 0; c < keys; ++c) {
            AddWeightedRows(p + c, kKeyBlock, do_block, q_row, rows, d, dv_acc.data() + (s0 + c) * d);
            AddWeightedRows(ds + c, kKeyBlock, q_block, q_row, rows, d, dk_acc.data() + (s0 + c) * d);
          }
        }
      }
      for (int64_t s = 0; s < t; ++s)
        std::memcpy(dq + ((b * t + s) * sh.h + head) * d, dq_acc.data() + s * d, sizeof(float) * d);
    }
    for (int64_t s = 0; s < t; ++s) {
      std::memcpy(dk + (b * t + s) * kv_row + kvh * d, dk_acc.data() + s * d, sizeof(float) * d);
      std::memcpy(dv + (b * t + s) * kv_row + kvh * d, dv_acc.data() + s * d, sizeof(float) * d);
    }
  }
};

// Runs fn.Item(i) for i < items over up to `threads` threads (the calling one included).
template <typename Fn>
void Parallel(const Fn& fn, int64_t items, int64_t threads) {
  threads = std::max<int64_t>(1, std::min(threads, items));
  std::vector<std::thread> workers;
  for (int64_t w = 1; w < threads; ++w)
    workers.emplace_back([&fn, w, items, threads] { for (int64_t i = w; i < items; i += threads) fn.Item(i); });
  for (int64_t i = 0; i < items; i += threads) fn.Item(i);
  for (auto& worker : workers) worker.join();
}

bool Supported() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace flash

namespace {

ffi::Error CheckShapes(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& k, const ffi::Buffer<ffi::F32>& v,
                       const ffi::Buffer<ffi::S32>& valid, flash::Shape* sh) {
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions(), md = valid.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || md.size() != 2)
    return ffi::Error::InvalidArgument("atomsearch_flash: q, k, v must be 4-D and valid 2-D");
  *sh = flash::Shape{qd[0], qd[1], qd[2], kd[2], qd[3], kd[2] ? qd[2] / kd[2] : 0};
  for (int i = 0; i < 4; ++i)
    if (kd[i] != vd[i]) return ffi::Error::InvalidArgument("atomsearch_flash: k and v shapes differ");
  if (kd[0] != sh->b || kd[1] != sh->t || kd[3] != sh->d || md[0] != sh->b || md[1] != sh->t || sh->kv == 0 ||
      sh->h % sh->kv || sh->d % 8 || sh->d > 256)
    return ffi::Error::InvalidArgument("atomsearch_flash: shapes do not agree (q [B,T,H,D], k/v [B,T,K,D], "
                                       "valid [B,T], H a multiple of K, D a multiple of 8 up to 256)");
  if (!flash::Supported()) return ffi::Error::Internal("atomsearch_flash: this CPU lacks AVX2/FMA");
  return ffi::Error::Success();
}

ffi::Error FlashForward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                        ffi::Buffer<ffi::S32> valid, ffi::ResultBuffer<ffi::F32> o, ffi::ResultBuffer<ffi::F32> lse,
                        int64_t threads) {
  flash::Shape sh;
  if (auto error = CheckShapes(q, k, v, valid, &sh); error.failure()) return error;
  const flash::Forward fwd{q.typed_data(), k.typed_data(), v.typed_data(), valid.typed_data(), o->typed_data(),
                           lse->typed_data(), sh, 1.f / std::sqrt(static_cast<float>(sh.d))};
  flash::Parallel(fwd, sh.b * sh.kv, threads);
  return ffi::Error::Success();
}

ffi::Error FlashBackward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                         ffi::Buffer<ffi::S32> valid, ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> lse,
                         ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk,
                         ffi::ResultBuffer<ffi::F32> dv, int64_t threads) {
  flash::Shape sh;
  if (auto error = CheckShapes(q, k, v, valid, &sh); error.failure()) return error;
  const flash::Backward bwd{q.typed_data(), k.typed_data(), v.typed_data(), o.typed_data(), lse.typed_data(),
                            dout.typed_data(), valid.typed_data(), dq->typed_data(), dk->typed_data(),
                            dv->typed_data(), sh, 1.f / std::sqrt(static_cast<float>(sh.d))};
  flash::Parallel(bwd, sh.b * sh.kv, threads);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AtomsearchFlashForward, FlashForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AtomsearchFlashBackward, FlashBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads"));
#endif
