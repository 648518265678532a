// The LM head's greedy token without reading the whole float32 head: an XLA:CPU typed-FFI handler.
//
// Greedy decoding needs only each row's argmax over the logits x.w_j (j over the vocabulary), not the logits.
// A bfloat16 copy of the head (half the bytes of the float32 one; AVX512-BF16 dot products) gives every
// logit to within a bound r_j (Cauchy-Schwarz over the rounding of x and of w_j to bfloat16, plus the
// rounding of both float32 sums), so only tokens whose upper bound reaches the best lower bound can hold the
// largest logit. Those few are recomputed in float32 adding in exactly the order of few_rows.h's loop for the
// head's layout, and the largest (first index on ties) wins. The token is thus the argmax of the float32
// logits that loop computes, whatever the bfloat16 values were. A row with a non-finite value, or with more
// than kMaxCandidates candidates on a thread, is recomputed whole in float32 (argmax as numpy's: the first
// NaN, else the first maximum).
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "few_rows.h"

#ifdef ATOMSEARCH_HAVE_FEW_ROWS
namespace {

constexpr int64_t kGroupRows = kMaxRows;       // rows screened together (one accumulator register each)
constexpr size_t kMaxCandidates = 1024;        // per row and thread after pruning; beyond: the row is redone
constexpr int64_t kScreenPrefetchRows = 8;     // bfloat16 head rows ahead, as the float32 loop
constexpr double kUnitRoundoff = 0x1p-24;      // float32
constexpr double kNormSlack = 1e-3;            // relative: the norms' and the bound's own float rounding
constexpr float kFlushSlack = 1e-30f;          // bfloat16 dot products flush subnormals (each < 2^-126)

uint16_t ToBfloat16(float f) {  // round to nearest even, as XLA's convert (finite f)
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float FromBfloat16(uint16_t h) {
  const uint32_t u = uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// gamma_n of floating-point summation: |computed - exact| <= gamma_n * sum |terms| for n roundings.
double Gamma(int64_t n) { return n * kUnitRoundoff / (1.0 - n * kUnitRoundoff); }

// One row of x: its bfloat16 copy (zero-padded to a multiple of 32) and the coefficients of its bound
//   r_j = e * |w_j| + d * |w_j - bf16(w_j)| + t * |bf16(w_j)| + flush
// on |float32 logit - bfloat16 screen value| (|.| the 2-norm; the three norms per token come with the screen).
struct Row {
  std::vector<uint16_t> bf16;
  float e = 0, d = 0, t = 0, flush = 0;
  bool finite = true;
};

Row PrepareRow(const float* x, int64_t k, int64_t padded) {
  Row row;
  row.bf16.assign(padded, 0);
  double norm = 0, rounded_norm = 0, error_norm = 0;
  for (int64_t p = 0; p < k; ++p) {
    if (!std::isfinite(x[p])) row.finite = false;
    row.bf16[p] = ToBfloat16(x[p]);
    const double rounded = FromBfloat16(row.bf16[p]);
    norm += double{x[p]} * x[p];
    rounded_norm += rounded * rounded;
    error_norm += (x[p] - rounded) * (x[p] - rounded);
  }
  norm = std::sqrt(norm), rounded_norm = std::sqrt(rounded_norm), error_norm = std::sqrt(error_norm);
  const double slack = 1 + kNormSlack;
  // float32 sums of k products (few_rows.h: 8-lane partial sums and their 3 horizontal adds, or one fma
  // chain) and bfloat16 dot products (two roundings per pair of products, 4 adds across the lanes).
  row.e = static_cast<float>(slack * (error_norm + Gamma(k + 16) * norm));
  row.d = static_cast<float>(slack * rounded_norm);
  row.t = static_cast<float>(slack * Gamma(2 * k + 16) * rounded_norm) + kFlushSlack;  // + x's flushed entries
  row.flush = kFlushSlack * static_cast<float>(1 + rounded_norm + 2 * k);  // w's flushed entries, flushed sums
  row.finite = row.finite && std::isfinite(row.e) && std::isfinite(row.d) && std::isfinite(row.t);
  return row;
}

// One row's tokens that may hold its largest logit, as one thread's chunks saw them.
struct Candidates {
  float best_lower = -std::numeric_limits<float>::infinity();
  bool redo = false;  // a non-finite bound or too many candidates: the row is recomputed whole
  std::vector<std::pair<int64_t, float>> items;  // (token, upper bound)

  void Offer(int64_t j, float lower, float upper) {
    if (upper < best_lower) return;
    if (lower > best_lower) best_lower = lower;
    items.emplace_back(j, upper);
    if (items.size() >= 2 * kMaxCandidates) Prune(best_lower);
  }

  void Prune(float lower) {
    size_t kept = 0;
    for (const auto& item : items) {
      if (item.second >= lower) items[kept++] = item;
    }
    items.resize(kept);
    if (kept > kMaxCandidates) redo = true;
  }
};

// Screens tokens [j0, j1) for R rows: each token's bfloat16 logit for each row and its bounds, offered to the
// row's candidates. (Reducing the 8 rows' sums in one transposing tree and comparing all rows' bounds in one
// vector ran 1.6x slower than these scalar epilogues on a Zen 4 core, measured.)
template <int R>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void Screen(const Row* rows, const uint16_t* head,
                                                                  const float* norms, int64_t n, int64_t k,
                                                                  int64_t j0, int64_t j1, Candidates* out) {
  const int64_t whole = k / 32 * 32;
  const __mmask32 tail = k % 32 ? static_cast<__mmask32>((uint32_t{1} << (k % 32)) - 1) : __mmask32{0};
  const uint16_t* x[R];
  for (int r = 0; r < R; ++r) x[r] = rows[r].bf16.data();
  for (int64_t j = j0; j < j1; ++j) {
    const uint16_t* wj = head + j * k;
    const uint16_t* ahead = head + std::min(j + kScreenPrefetchRows, n - 1) * k;
    __m512 acc[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t p = 0; p < whole; p += 32) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + p), _MM_HINT_NTA);
      const __m512bh w = (__m512bh)_mm512_loadu_si512(wj + p);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_loadu_si512(x[r] + p), w);
    }
    if (tail) {  // x is zero-padded; the weight is masked (past it lies the next row, or nothing)
      const __m512bh w = (__m512bh)_mm512_maskz_loadu_epi16(tail, wj + whole);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_loadu_si512(x[r] + whole), w);
    }
    const float e = norms[j], d = norms[n + j], t = norms[2 * n + j];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Row& row = rows[r];
      const float value = _mm512_reduce_add_ps(acc[r]);
      const float bound = row.e * e + row.d * d + row.t * t + row.flush + std::fabs(value) * 0x1p-22f;
      const float lower = value - bound, upper = value + bound;
      if (std::isfinite(lower) && std::isfinite(upper)) {
        out[r].Offer(j, lower, upper);
      } else {
        out[r].redo = true;
      }
    }
  }
}

// The float32 logit x.w_j as the full head's loop computes it (few_rows.h): skinny::DotRows for the stored
// [V, E] embedding read transposed, stored::Block's fma chain for an [E, V] kernel.
float ExactLogit(const float* x, const float* w, bool transposed, int64_t n, int64_t k, int64_t j) {
  float y;
  if (transposed) {
    skinny::DotRows<1>(x, w + j * k, w + j * k, &y, k, 1, 0);
    return y;
  }
  y = 0.f;
  for (int64_t p = 0; p < k; ++p) y = std::fma(x[p], w[p * n + j], y);
  return y;
}

// numpy's argmax of the row's whole float32 logits (the first NaN, else the first maximum).
std::pair<int64_t, float> WholeRow(const float* x, const float* w, bool transposed, int64_t n, int64_t k) {
  std::pair<int64_t, float> best{0, ExactLogit(x, w, transposed, n, k, 0)};
  for (int64_t j = 0; j < n && !std::isnan(best.second); ++j) {
    const float y = ExactLogit(x, w, transposed, n, k, j);
    if (std::isnan(y) || y > best.second) best = {j, y};
  }
  return best;
}

// The token and its float32 logit for one row from its candidates on every thread.
std::pair<int64_t, float> Decide(const std::vector<Candidates*>& seen, const float* x, const float* w,
                                 bool transposed, int64_t n, int64_t k) {
  float lower = -std::numeric_limits<float>::infinity();
  for (const Candidates* c : seen) {
    if (c->redo) return WholeRow(x, w, transposed, n, k);
    lower = std::max(lower, c->best_lower);
  }
  std::pair<int64_t, float> best{-1, 0.f};
  for (const Candidates* c : seen) {
    for (const auto& [j, upper] : c->items) {
      if (upper < lower) continue;
      const float y = ExactLogit(x, w, transposed, n, k, j);
      if (std::isnan(y)) return WholeRow(x, w, transposed, n, k);
      if (best.first < 0 || y > best.second || (y == best.second && j < best.first)) best = {j, y};
    }
  }
  return best.first < 0 ? WholeRow(x, w, transposed, n, k) : best;
}

template <int R>
void ScreenGroup(ffi::ThreadPool& pool, const Row* rows, const uint16_t* head, const float* norms, int64_t n,
                 int64_t k, std::vector<std::vector<Candidates>>& per_thread) {
  const parallel::Plan plan = parallel::PlanChunks(pool, n, n * k, 1);
  per_thread.assign(std::max<int64_t>(plan.threads, 1), std::vector<Candidates>(R));
  if (plan.threads <= 1 || plan.chunks <= 1) {
    Screen<R>(rows, head, norms, n, k, 0, n, per_thread[0].data());
    return;
  }
  parallel::RunChunks(pool, plan, [&](int64_t slot, int64_t c) {
    Screen<R>(rows, head, norms, n, k, c * plan.size, std::min(n, (c + 1) * plan.size), per_thread[slot].data());
  });
}

using ScreenFn = void (*)(ffi::ThreadPool&, const Row*, const uint16_t*, const float*, int64_t, int64_t,
                          std::vector<std::vector<Candidates>>&);
constexpr ScreenFn kScreenByRows[kGroupRows + 1] = {nullptr, ScreenGroup<1>, ScreenGroup<2>, ScreenGroup<3>,
                                                    ScreenGroup<4>, ScreenGroup<5>, ScreenGroup<6>, ScreenGroup<7>,
                                                    ScreenGroup<8>};

__attribute__((target("avx512f,avx512bw"))) inline __m512 Widen(__m256i bf16) {  // bfloat16 -> float32, exact
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bf16), 16));
}

// Rows [j0, j1) of the screen: bfloat16 copies of the head's rows w_j and the norms |w_j|, |w_j - bf16(w_j)|,
// |bf16(w_j)| (float32 sums of 16 lanes, far inside the bound's kNormSlack). w is [n, k] (transposed) or [k, n].
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void ScreenRows(const float* w, bool transposed, int64_t n,
                                                                      int64_t k, int64_t j0, int64_t j1,
                                                                      uint16_t* rows, float* norms) {
  if (transposed) {
    for (int64_t j = j0; j < j1; ++j) {
      __m512 e = _mm512_setzero_ps(), d = _mm512_setzero_ps(), t = _mm512_setzero_ps();
      for (int64_t p = 0; p < k; p += 16) {
        const __mmask16 mask = k - p >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (k - p)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(mask, w + j * k + p);
        const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
        _mm256_mask_storeu_epi16(rows + j * k + p, mask, h);
        const __m512 back = Widen(h), diff = _mm512_sub_ps(v, back);
        e = _mm512_fmadd_ps(v, v, e), d = _mm512_fmadd_ps(diff, diff, d), t = _mm512_fmadd_ps(back, back, t);
      }
      norms[j] = std::sqrt(_mm512_reduce_add_ps(e));
      norms[n + j] = std::sqrt(_mm512_reduce_add_ps(d));
      norms[2 * n + j] = std::sqrt(_mm512_reduce_add_ps(t));
    }
    return;
  }
  for (int64_t g = j0; g < j1; g += 16) {  // 16 tokens a lane each: w's rows are contiguous over tokens
    const int64_t lanes = std::min<int64_t>(16, j1 - g);
    const __mmask16 mask = static_cast<__mmask16>((1u << lanes) - 1);
    __m512 e = _mm512_setzero_ps(), d = _mm512_setzero_ps(), t = _mm512_setzero_ps();
    alignas(64) uint16_t h16[16];
    for (int64_t p = 0; p < k; ++p) {
      const __m512 v = _mm512_maskz_loadu_ps(mask, w + p * n + g);
      const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
      _mm256_store_si256(reinterpret_cast<__m256i*>(h16), h);
      for (int64_t l = 0; l < lanes; ++l) rows[(g + l) * k + p] = h16[l];
      const __m512 back = Widen(h), diff = _mm512_sub_ps(v, back);
      e = _mm512_fmadd_ps(v, v, e), d = _mm512_fmadd_ps(diff, diff, d), t = _mm512_fmadd_ps(back, back, t);
    }
    _mm512_mask_storeu_ps(norms + g, mask, _mm512_sqrt_ps(e));
    _mm512_mask_storeu_ps(norms + n + g, mask, _mm512_sqrt_ps(d));
    _mm512_mask_storeu_ps(norms + 2 * n + g, mask, _mm512_sqrt_ps(t));
  }
}

bool CpuSupported() {
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

ffi::Error BuildScreen(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::BF16> rows,
                       ffi::ResultBuffer<ffi::F32> norms, bool transposed) {
  const auto wd = w.dimensions(), rd = rows->dimensions(), nd = norms->dimensions();
  if (wd.size() != 2 || rd.size() != 2 || nd.size() != 2) {
    return ffi::Error::InvalidArgument("atomsearch_head_screen: w, rows and norms must be 2-D");
  }
  const int64_t n = transposed ? wd[0] : wd[1], k = transposed ? wd[1] : wd[0];
  if (rd[0] != n || rd[1] != k || nd[0] != 3 || nd[1] != n) {
    return ffi::Error::InvalidArgument("atomsearch_head_screen: operand shapes do not agree");
  }
  if (!CpuSupported()) {
    return ffi::Error::InvalidArgument("atomsearch_head_screen: this CPU lacks AVX512-BF16, AVX512BW, AVX512VL, AVX2 or FMA");
  }
  auto* out_rows = reinterpret_cast<uint16_t*>(rows->untyped_data());
  parallel::Columns(pool, n, k, 16, [&](int64_t j0, int64_t j1) {
    ScreenRows(w.typed_data(), transposed, n, k, j0, j1, out_rows, norms->typed_data());
  });
  return ffi::Error::Success();
}

ffi::Error GreedyHead(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                      ffi::Buffer<ffi::BF16> screen, ffi::Buffer<ffi::F32> norms, ffi::ResultBuffer<ffi::S32> tokens,
                      ffi::ResultBuffer<ffi::F32> logits, bool transposed) {
  const auto xd = x.dimensions(), wd = w.dimensions(), sd = screen.dimensions(), nd = norms.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || sd.size() != 2 || nd.size() != 2) {
    return ffi::Error::InvalidArgument("atomsearch_greedy_head: x, w, screen and norms must be 2-D");
  }
  const int64_t m = xd[0], k = xd[1], n = sd[0];
  if ((transposed ? wd[0] : wd[1]) != n || (transposed ? wd[1] : wd[0]) != k || sd[1] != k || nd[0] != 3 ||
      nd[1] != n || tokens->dimensions().size() != 1 || tokens->dimensions()[0] != m ||
      logits->dimensions().size() != 1 || logits->dimensions()[0] != m) {
    return ffi::Error::InvalidArgument("atomsearch_greedy_head: operand shapes do not agree");
  }
  if (!CpuSupported()) {
    return ffi::Error::InvalidArgument("atomsearch_greedy_head: this CPU lacks AVX512-BF16, AVX512BW, AVX512VL, AVX2 or FMA");
  }
  if (m == 0) return ffi::Error::Success();
  if (n == 0) return ffi::Error::InvalidArgument("atomsearch_greedy_head: an empty vocabulary has no argmax");
  const float* xs = x.typed_data();
  const float* ws = w.typed_data();
  const auto* head = reinterpret_cast<const uint16_t*>(screen.untyped_data());
  const int64_t padded = (k + 31) / 32 * 32;
  std::vector<std::vector<Candidates>> per_thread;
  for (int64_t g0 = 0; g0 < m; g0 += kGroupRows) {
    const int64_t rows_here = std::min(kGroupRows, m - g0);
    std::vector<Row> rows;
    for (int64_t r = 0; r < rows_here; ++r) rows.push_back(PrepareRow(xs + (g0 + r) * k, k, padded));
    kScreenByRows[rows_here](pool, rows.data(), head, norms.typed_data(), n, k, per_thread);
    for (int64_t r = 0; r < rows_here; ++r) {
      const float* xr = xs + (g0 + r) * k;
      std::vector<Candidates*> seen;
      for (auto& thread : per_thread) seen.push_back(&thread[r]);
      const auto [j, y] = rows[r].finite ? Decide(seen, xr, ws, transposed, n, k) : WholeRow(xr, ws, transposed, n, k);
      tokens->typed_data()[g0 + r] = static_cast<int32_t>(j);
      logits->typed_data()[g0 + r] = y;
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AtomsearchGreedyHead, GreedyHead,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transposed"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AtomsearchHeadScreen, BuildScreen,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transposed"));
#endif
