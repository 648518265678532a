// y = op(a) @ op(b) for float32 matrices, as an XLA:CPU typed-FFI handler calling OpenBLAS's sgemm.
//
// XLA:CPU's dot runs the model's products (decode: 8 rows x every weight; training: [B*T, E] x [E, F])
// below the speed of an optimised BLAS on the same cores; this handler hands them to OpenBLAS (the
// scipy-openblas32 wheel, linked at build time). op(m) is m or m^T as the attributes say; operands are
// row-major as XLA lays out 2-D arrays by default (the Python side pins that layout). Products of at most
// skinny::kMaxRows rows against a weight read transposed (the tied LM head at decode) take the loop below
// instead of sgemm on x86 CPUs with AVX2 and FMA.
#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

extern "C" {
// cblas.h of scipy-openblas32 (32-bit integers, symbol prefix "scipy_").
enum AtomsearchCblasOrder { kRowMajor = 101 };
enum AtomsearchCblasTranspose { kNoTrans = 111, kTrans = 112 };
void scipy_cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a,
                       int lda, const float* b, int ldb, float beta, float* c, int ldc);
}

// ---- few-row products against a weight read transposed (y = x w^T, w [N, K] row-major) ----
//
// sgemm packs every panel of w into a buffer before multiplying: for a handful of rows that copy costs as
// much as the product, so the tied LM head at decode ([8, 896] x [151936, 896]^T) ran at ~8 GB/s of weight
// (67 ms). Here each weight row is read once, straight from memory, and dotted with all (up to 8) rows of x
// held in L1: one accumulator register per row, the weight row kPrefetchRows ahead prefetched past the caches
// (non-temporal, so the streaming weight does not evict x), the columns split over threads: 34 ms.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ATOMSEARCH_HAVE_SKINNY 1
#include <immintrin.h>

#include <algorithm>
#include <thread>
#include <vector>

namespace skinny {

// One accumulator register per row: 8 rows fill the loop's registers; more would need a second pass over each
// weight row, so they go to sgemm.
constexpr int64_t kMaxRows = 8;
constexpr int64_t kPrefetchRows = 8;    // weight rows ahead (2-16 ran within noise of each other on the LM head)
constexpr int64_t kMinThreadElements = int64_t{1} << 20;   // a thread per this many weight elements at most

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
__attribute__((target("avx2,fma"))) void DotRowsAt(const float* x, const float* w, float* y, int64_t k, int64_t n,
                                                    int64_t j) {
  DotRows<R>(x, w + j * k, w + std::min(j + kPrefetchRows, n - 1) * k, y, k, n, j);
}

// Columns [n0, n1) of y for its m <= kMaxRows rows.
__attribute__((target("avx2,fma"))) void Columns(const float* x, const float* w, float* y, int64_t m, int64_t k,
                                                 int64_t n, int64_t n0, int64_t n1) {
  using Fn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t);
  static constexpr Fn kByRows[kMaxRows + 1] = {nullptr, DotRowsAt<1>, DotRowsAt<2>, DotRowsAt<3>, DotRowsAt<4>,
                                               DotRowsAt<5>, DotRowsAt<6>, DotRowsAt<7>, DotRowsAt<8>};
  const Fn dot = kByRows[m];
  for (int64_t j = n0; j < n1; ++j) dot(x, w, y, k, n, j);
}

bool Supported(int64_t m) {
  return m >= 1 && m <= kMaxRows && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// y [m, n] = x [m, k] w^T for w [n, k]; the columns split over up to hardware_concurrency() threads.
void Multiply(const float* x, const float* w, float* y, int64_t m, int64_t k, int64_t n) {
  const int64_t by_size = std::max<int64_t>(1, n * k / kMinThreadElements);
  const int64_t threads = std::min<int64_t>(by_size, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < threads; ++t) workers.emplace_back(Columns, x, w, y, m, k, n, n * t / threads, n * (t + 1) / threads);
  Columns(x, w, y, m, k, n, 0, n / threads);
  for (auto& worker : workers) worker.join();
}

}  // namespace skinny
#endif

namespace {

ffi::Error Sgemm(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> c, bool trans_a,
                 bool trans_b) {
  const auto ad = a.dimensions(), bd = b.dimensions(), cd = c->dimensions();
  if (ad.size() != 2 || bd.size() != 2 || cd.size() != 2) {
    return ffi::Error::InvalidArgument("atomsearch_sgemm: operands must be 2-D");
  }
  const int64_t m = trans_a ? ad[1] : ad[0], k = trans_a ? ad[0] : ad[1];
  const int64_t kb = trans_b ? bd[1] : bd[0], n = trans_b ? bd[0] : bd[1];
  if (k != kb || cd[0] != m || cd[1] != n) {
    return ffi::Error::InvalidArgument("atomsearch_sgemm: operand shapes do not agree");
  }
  constexpr int64_t kMaxInt = 2147483647;
  if (ad[0] > kMaxInt || ad[1] > kMaxInt || bd[0] > kMaxInt || bd[1] > kMaxInt) {
    return ffi::Error::InvalidArgument("atomsearch_sgemm: a dimension exceeds 32-bit BLAS integers");
  }
  if (m == 0 || n == 0) return ffi::Error::Success();
  float* out = c->typed_data();
  if (k == 0) {
    for (int64_t i = 0; i < m * n; ++i) out[i] = 0.f;
    return ffi::Error::Success();
  }
#ifdef ATOMSEARCH_HAVE_SKINNY
  if (!trans_a && trans_b && skinny::Supported(m)) {
    skinny::Multiply(a.typed_data(), b.typed_data(), out, m, k, n);
    return ffi::Error::Success();
  }
#endif
  scipy_cblas_sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, static_cast<int>(m),
                    static_cast<int>(n), static_cast<int>(k), 1.f, a.typed_data(), static_cast<int>(ad[1]),
                    b.typed_data(), static_cast<int>(bd[1]), 0.f, out, static_cast<int>(n));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AtomsearchSgemm, Sgemm,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b"));
