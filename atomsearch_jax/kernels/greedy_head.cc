// The LM head's greedy token without reading the whole float32 head: XLA:CPU typed-FFI handlers.
//
// Greedy decoding needs only each row's argmax over the logits x.w_j (j over the vocabulary), not the logits.
// An int8 copy of the head (a quarter of the float32 head's bytes; per-token scales; AVX512-VNNI dot
// products with x quantized to 8 bits as well) gives every logit to within a bound r_j (Cauchy-Schwarz over
// the quantization errors of x and w_j, plus the float32 sum's own rounding; the integer sums are exact), so
// only tokens whose upper bound reaches the best lower bound can hold the largest logit. Those are
// recomputed in float32 adding in exactly the order of few_rows.h's loop for the head's layout, and the
// largest (first index on ties) wins. The token is thus the argmax of the float32 logits that loop
// computes, whatever the int8 values were. A row with a non-finite value, or with more than kMaxCandidates
// candidates on a thread, is recomputed whole in float32 (argmax as numpy's: the first NaN, else the first
// maximum). The screen (the int8 rows and per-token norms, scales and sums) is built by the second handler.
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "few_rows.h"

#ifdef ATOMSEARCH_HAVE_FEW_ROWS
namespace {

constexpr int64_t kGroupRows = kMaxRows;       // rows screened together (one accumulator register each)
constexpr size_t kMaxCandidates = 4096;        // per row and thread after pruning; beyond: the row is redone
constexpr int64_t kScreenPrefetchRows = 8;     // int8 head rows ahead
constexpr int64_t kStep = 64;                  // int8 values per AVX-512 vector
constexpr double kUnitRoundoff = 0x1p-24;      // float32
constexpr double kNormSlack = 1e-3;            // relative: the norms' and the bound's own float rounding
constexpr float kTiny = 1e-30f;                // absolute slack (underflow in the float32 products)
constexpr int kZeroPoint = 128;                // x is stored as x_int + 128 in [1, 255] (VNNI takes unsigned x)

// gamma_n of floating-point summation: |computed - exact| <= gamma_n * sum |terms| for n roundings.
double Gamma(int64_t n) { return n * kUnitRoundoff / (1.0 - n * kUnitRoundoff); }

// One row of x: its 8-bit copy x_int * scale (stored as x_int + kZeroPoint, zero-padded to a multiple of kStep)
// and the coefficients of its bound on |float32 logit - screen value|
//   r_j = e * |w_j| + d * |w_j - w_int_j * scale_j| + tiny   (|.| the 2-norm; the norms come with the screen).
struct Row {
  std::vector<uint8_t> u8;
  float scale = 1, e = 0, d = 0;
  bool finite = true;
};

Row PrepareRow(const float* x, int64_t k, int64_t padded) {
  Row row;
  row.u8.assign(padded, 0);
  float top = 0;
  for (int64_t p = 0; p < k; ++p) {
    if (!std::isfinite(x[p])) row.finite = false;
    top = std::max(top, std::fabs(x[p]));
  }
  row.scale = top > 0 && row.finite ? top / 127.f : 1.f;
  double norm = 0, quantized_norm = 0, error_norm = 0;
  for (int64_t p = 0; p < k && row.finite; ++p) {
    const int q = std::clamp(static_cast<int>(std::nearbyint(x[p] / row.scale)), -127, 127);
    row.u8[p] = static_cast<uint8_t>(q + kZeroPoint);
    const double quantized = double{row.scale} * q;
    norm += double{x[p]} * x[p];
    quantized_norm += quantized * quantized;
    error_norm += (x[p] - quantized) * (x[p] - quantized);
  }
  const double slack = 1 + kNormSlack;
  // The float32 sums of few_rows.h's loops (8-lane partial sums and their 3 horizontal adds, or one fma chain).
  row.e = static_cast<float>(slack * (std::sqrt(error_norm) + Gamma(k + 16) * std::sqrt(norm)));
  row.d = static_cast<float>(slack * std::sqrt(quantized_norm));
  row.finite = row.finite && std::isfinite(row.e) && std::isfinite(row.d);
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

// Screens tokens [j0, j1) for R rows: each token's int8 logit for each row and its bounds, offered to the
// row's candidates. (Reducing the 8 rows' sums in one transposing tree and comparing all rows' bounds in one
// vector ran 1.6x slower than these scalar epilogues on a Zen 4 core, measured with the bfloat16 screen.)
// norms [4, n]: |w_j|, |w_j - w_int_j * scale_j|, scale_j, sum of w_int_j.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void Screen(const Row* rows, const int8_t* head,
                                                                  const float* norms, int64_t n, int64_t k,
                                                                  int64_t j0, int64_t j1, Candidates* out) {
  const int64_t whole = k / kStep * kStep;
  const __mmask64 tail = k % kStep ? (__mmask64{1} << (k % kStep)) - 1 : __mmask64{0};
  const uint8_t* x[R];
  for (int r = 0; r < R; ++r) x[r] = rows[r].u8.data();
  // The widest bound of any token here, per row: most tokens' values fall below the best lower bound by more
  // than that and are passed over without computing their own.
  // (A non-finite norm makes every bound here infinite: no token is passed over, and its own bound redoes the row.)
  float widest_e = 0, widest_d = 0;
  bool finite = true;
  for (int64_t j = j0; j < j1; ++j) {
    finite = finite && std::isfinite(norms[j]) && std::isfinite(norms[n + j]);
    widest_e = std::max(widest_e, norms[j]), widest_d = std::max(widest_d, norms[n + j]);
  }
  float widest[R];
  for (int r = 0; r < R; ++r) {
    widest[r] = finite ? rows[r].e * widest_e + rows[r].d * widest_d + kTiny : std::numeric_limits<float>::infinity();
  }
  for (int64_t j = j0; j < j1; ++j) {
    const int8_t* wj = head + j * k;
    const int8_t* ahead = head + std::min(j + kScreenPrefetchRows, n - 1) * k;
    __m512i acc[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
    for (int64_t p = 0; p < whole; p += kStep) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + p), _MM_HINT_NTA);
      const __m512i w = _mm512_loadu_si512(wj + p);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_loadu_si512(x[r] + p), w);
    }
    if (tail) {  // x is zero-padded (0, not the zero point); the weight is masked (past it: the next row)
      const __m512i w = _mm512_maskz_loadu_epi8(tail, wj + whole);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_loadu_si512(x[r] + whole), w);
    }
    const float e = norms[j], d = norms[n + j], scale = norms[2 * n + j];
    const int32_t zero_point_sum = kZeroPoint * static_cast<int32_t>(norms[3 * n + j]);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Row& row = rows[r];
      // sum of x_int * w_int: exact in int32 (|sum| <= 255 * 127 * k); as a float within 2^-24 of itself
      const float value = static_cast<float>(_mm512_reduce_add_epi32(acc[r]) - zero_point_sum) * (row.scale * scale);
      const float rounding = std::fabs(value) * 0x1p-20f;  // of value itself, and of value -/+ bound
      if (value + (widest[r] + rounding) < out[r].best_lower) continue;  // (also false for NaN: offered below)
      const float bound = row.e * e + row.d * d + kTiny + rounding;
      const float lower = value - bound, upper = value + bound;
      if (std::isfinite(lower) && std::isfinite(upper)) {
        out[r].Offer(j, lower, upper);
      } else {
        out[r].redo = true;
      }
    }
  }
}

// One row's float32 logits as the full head's loop computes them (few_rows.h): skinny::DotRows for the stored
// [V, E] embedding read transposed (w [n, k]); for an [E, V] kernel (w [k, n]), stored::Block's fma chains over
// `summed_rows` weight rows at a time (stored::SummedRows), added in order as stored::Multiply adds them.
struct Head {
  const float* w;
  bool transposed;
  int64_t n, k, summed_rows;

  // x.w_j for x [k].
  float Logit(const float* x, int64_t j) const {
    float y = 0.f;
    if (transposed) {
      skinny::DotRows<1>(x, w + j * k, w + j * k, &y, k, 1, 0);
      return y;
    }
    for (int64_t k0 = 0; k0 < k; k0 += summed_rows) {
      float partial = 0.f;
      for (int64_t p = k0; p < std::min(k, k0 + summed_rows); ++p) partial = std::fma(x[p], w[p * n + j], partial);
      y = k0 == 0 ? partial : y + partial;
    }
    return y;
  }
};

// numpy's argmax of the row's whole float32 logits (the first NaN, else the first maximum).
std::pair<int64_t, float> WholeRow(const float* x, const Head& head) {
  std::pair<int64_t, float> best{0, head.Logit(x, 0)};
  for (int64_t j = 0; j < head.n && !std::isnan(best.second); ++j) {
    const float y = head.Logit(x, j);
    if (std::isnan(y) || y > best.second) best = {j, y};
  }
  return best;
}

// The token and its float32 logit for one row from its candidates on every thread.
std::pair<int64_t, float> Decide(const std::vector<Candidates*>& seen, const float* x, const Head& head) {
  float lower = -std::numeric_limits<float>::infinity();
  for (const Candidates* c : seen) {
    if (c->redo) return WholeRow(x, head);
    lower = std::max(lower, c->best_lower);
  }
  std::pair<int64_t, float> best{-1, 0.f};
  for (const Candidates* c : seen) {
    for (const auto& [j, upper] : c->items) {
      if (upper < lower) continue;
      const float y = head.Logit(x, j);
      if (std::isnan(y)) return WholeRow(x, head);
      if (best.first < 0 || y > best.second || (y == best.second && j < best.first)) best = {j, y};
    }
  }
  return best.first < 0 ? WholeRow(x, head) : best;
}

template <int R>
void ScreenGroup(ffi::ThreadPool& pool, const Row* rows, const int8_t* head, const float* norms, int64_t n,
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

using ScreenFn = void (*)(ffi::ThreadPool&, const Row*, const int8_t*, const float*, int64_t, int64_t,
                          std::vector<std::vector<Candidates>>&);
constexpr ScreenFn kScreenByRows[kGroupRows + 1] = {nullptr, ScreenGroup<1>, ScreenGroup<2>, ScreenGroup<3>,
                                                    ScreenGroup<4>, ScreenGroup<5>, ScreenGroup<6>, ScreenGroup<7>,
                                                    ScreenGroup<8>};

// Quantizes 16 floats (times 1 / scale) to int8, and adds their squares, squared errors and integers.
__attribute__((target("avx512f"))) inline __m128i Quantize16(__m512 v, __m512 inverse, __m512 scale, __m512& e,
                                                            __m512& d, __m512i& sum) {
  const __m512i q = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inverse)),
                                                      _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
  const __m512 error = _mm512_sub_ps(v, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(q)));
  e = _mm512_fmadd_ps(v, v, e), d = _mm512_fmadd_ps(error, error, d), sum = _mm512_add_epi32(sum, q);
  return _mm512_cvtepi32_epi8(q);
}

// Rows [j0, j1) of the screen: int8 rows w_int_j = round(w_j / scale_j) with scale_j = max |w_j| / 127, and
// norms [4, n]: |w_j|, |w_j - w_int_j * scale_j| (float32 sums of 16 lanes, far inside the bound's
// kNormSlack), scale_j, sum of w_int_j (exact as a float). w is [n, k] (transposed) or [k, n].
__attribute__((target("avx512f,avx512bw,avx512vl"))) void ScreenRows(const float* w, bool transposed, int64_t n,
                                                                    int64_t k, int64_t j0, int64_t j1, int8_t* rows,
                                                                    float* norms) {
  const auto finish = [&](int64_t j, float e, float d, float scale, int32_t sum) {
    norms[j] = std::sqrt(e), norms[n + j] = std::sqrt(d), norms[2 * n + j] = scale;
    norms[3 * n + j] = static_cast<float>(sum);
  };
  if (transposed) {
    for (int64_t j = j0; j < j1; ++j) {
      const float* wj = w + j * k;
      __m512 top = _mm512_setzero_ps();
      for (int64_t p = 0; p < k; p += 16) {
        const __mmask16 mask = k - p >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (k - p)) - 1);
        top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, wj + p)));
      }
      const float most = _mm512_reduce_max_ps(top), scale = most > 0 ? most / 127.f : 1.f;
      const __m512 inverse = _mm512_set1_ps(1.f / scale), scales = _mm512_set1_ps(scale);
      __m512 e = _mm512_setzero_ps(), d = _mm512_setzero_ps();
      __m512i sum = _mm512_setzero_si512();
      for (int64_t p = 0; p < k; p += 16) {
        const __mmask16 mask = k - p >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (k - p)) - 1);
        const __m128i q = Quantize16(_mm512_maskz_loadu_ps(mask, wj + p), inverse, scales, e, d, sum);
        _mm_mask_storeu_epi8(rows + j * k + p, mask, q);
      }
      finish(j, _mm512_reduce_add_ps(e), _mm512_reduce_add_ps(d), scale, _mm512_reduce_add_epi32(sum));
    }
    return;
  }
  for (int64_t g = j0; g < j1; g += 16) {  // 16 tokens a lane each: w's rows are contiguous over tokens
    const int64_t lanes = std::min<int64_t>(16, j1 - g);
    const __mmask16 mask = static_cast<__mmask16>((1u << lanes) - 1);
    __m512 top = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; ++p) top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, w + p * n + g)));
    const __mmask16 zero = _mm512_cmp_ps_mask(top, _mm512_setzero_ps(), _CMP_EQ_OQ);
    const __m512 scales = _mm512_mask_blend_ps(zero, _mm512_div_ps(top, _mm512_set1_ps(127.f)), _mm512_set1_ps(1.f));
    const __m512 inverse = _mm512_div_ps(_mm512_set1_ps(1.f), scales);
    __m512 e = _mm512_setzero_ps(), d = _mm512_setzero_ps();
    __m512i sum = _mm512_setzero_si512();
    alignas(16) int8_t q16[16];
    for (int64_t p = 0; p < k; ++p) {
      _mm_store_si128(reinterpret_cast<__m128i*>(q16),
                      Quantize16(_mm512_maskz_loadu_ps(mask, w + p * n + g), inverse, scales, e, d, sum));
      for (int64_t l = 0; l < lanes; ++l) rows[(g + l) * k + p] = q16[l];
    }
    alignas(64) float es[16], ds[16], ss[16];
    alignas(64) int32_t sums[16];
    _mm512_store_ps(es, e), _mm512_store_ps(ds, d), _mm512_store_ps(ss, scales);
    _mm512_store_si512(sums, sum);
    for (int64_t l = 0; l < lanes; ++l) finish(g + l, es[l], ds[l], ss[l], sums[l]);
  }
}

bool CpuSupported() {
  return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

ffi::Error BuildScreen(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::S8> rows,
                       ffi::ResultBuffer<ffi::F32> norms, bool transposed) {
  const auto wd = w.dimensions(), rd = rows->dimensions(), nd = norms->dimensions();
  if (wd.size() != 2 || rd.size() != 2 || nd.size() != 2) {
    return ffi::Error::InvalidArgument("atomsearch_head_screen: w, rows and norms must be 2-D");
  }
  const int64_t n = transposed ? wd[0] : wd[1], k = transposed ? wd[1] : wd[0];
  if (rd[0] != n || rd[1] != k || nd[0] != 4 || nd[1] != n) {
    return ffi::Error::InvalidArgument("atomsearch_head_screen: operand shapes do not agree");
  }
  if (!CpuSupported()) {
    return ffi::Error::InvalidArgument("atomsearch_head_screen: this CPU lacks AVX512-VNNI, AVX512BW, AVX512VL, AVX2 or FMA");
  }
  auto* out_rows = reinterpret_cast<int8_t*>(rows->untyped_data());
  parallel::Columns(pool, n, k, 16, [&](int64_t j0, int64_t j1) {
    ScreenRows(w.typed_data(), transposed, n, k, j0, j1, out_rows, norms->typed_data());
  });
  return ffi::Error::Success();
}

ffi::Error GreedyHead(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                      ffi::Buffer<ffi::S8> screen, ffi::Buffer<ffi::F32> norms, ffi::ResultBuffer<ffi::S32> tokens,
                      ffi::ResultBuffer<ffi::F32> logits, bool transposed) {
  const auto xd = x.dimensions(), wd = w.dimensions(), sd = screen.dimensions(), nd = norms.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || sd.size() != 2 || nd.size() != 2) {
    return ffi::Error::InvalidArgument("atomsearch_greedy_head: x, w, screen and norms must be 2-D");
  }
  const int64_t m = xd[0], k = xd[1], n = sd[0];
  if ((transposed ? wd[0] : wd[1]) != n || (transposed ? wd[1] : wd[0]) != k || sd[1] != k || nd[0] != 4 ||
      nd[1] != n || tokens->dimensions().size() != 1 || tokens->dimensions()[0] != m ||
      logits->dimensions().size() != 1 || logits->dimensions()[0] != m) {
    return ffi::Error::InvalidArgument("atomsearch_greedy_head: operand shapes do not agree");
  }
  if (!CpuSupported()) {
    return ffi::Error::InvalidArgument("atomsearch_greedy_head: this CPU lacks AVX512-VNNI, AVX512BW, AVX512VL, AVX2 or FMA");
  }
  if (m == 0) return ffi::Error::Success();
  if (n == 0) return ffi::Error::InvalidArgument("atomsearch_greedy_head: an empty vocabulary has no argmax");
  const float* xs = x.typed_data();
  // More rows than the few-row loop takes go to other products (sgemm, XLA's dot): one chain per logit then.
  const Head head{w.typed_data(), transposed, n, k,
                  !transposed && m <= kMaxRows ? stored::SummedRows(pool, m, k, n) : k};
  const auto* screened = reinterpret_cast<const int8_t*>(screen.untyped_data());
  const int64_t padded = (k + kStep - 1) / kStep * kStep;
  std::vector<std::vector<Candidates>> per_thread;
  for (int64_t g0 = 0; g0 < m; g0 += kGroupRows) {
    const int64_t rows_here = std::min(kGroupRows, m - g0);
    std::vector<Row> rows;
    for (int64_t r = 0; r < rows_here; ++r) rows.push_back(PrepareRow(xs + (g0 + r) * k, k, padded));
    kScreenByRows[rows_here](pool, rows.data(), screened, norms.typed_data(), n, k, per_thread);
    for (int64_t r = 0; r < rows_here; ++r) {
      const float* xr = xs + (g0 + r) * k;
      std::vector<Candidates*> seen;
      for (auto& thread : per_thread) seen.push_back(&thread[r]);
      const auto [j, y] = rows[r].finite ? Decide(seen, xr, head) : WholeRow(xr, head);
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
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transposed"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AtomsearchHeadScreen, BuildScreen,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S8>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transposed"));
#endif
