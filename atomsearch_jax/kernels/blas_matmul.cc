// y = op(a) @ op(b) for float32 matrices, as an XLA:CPU typed-FFI handler calling OpenBLAS's sgemm.
//
// XLA:CPU's dot runs the model's products (decode: 8 rows x every weight; training: [B*T, E] x [E, F])
// below the speed of an optimised BLAS on the same cores; this handler hands them to OpenBLAS (the
// scipy-openblas32 wheel, linked at build time). op(m) is m or m^T as the attributes say; operands are
// row-major as XLA lays out 2-D arrays by default (the Python side pins that layout). Products of at most
// kMaxRows rows take few_rows.h's loops instead of sgemm: against a weight read transposed (the tied LM
// head at decode) on x86 CPUs with AVX2 and FMA, against a weight stored [K, N] (every layer at decode) on
// x86 CPUs with AVX-512. Both split their work over XLA's intra-op threads.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "few_rows.h"

extern "C" {
// cblas.h of scipy-openblas32 (32-bit integers, symbol prefix "scipy_").
enum AtomsearchCblasOrder { kRowMajor = 101 };
enum AtomsearchCblasTranspose { kNoTrans = 111, kTrans = 112 };
void scipy_cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a,
                       int lda, const float* b, int ldb, float beta, float* c, int ldc);
}

namespace {

ffi::Error Sgemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> c,
                 bool trans_a, bool trans_b) {
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
#ifdef ATOMSEARCH_HAVE_FEW_ROWS
  if (!trans_a && trans_b && skinny::Supported(m)) {
    skinny::Multiply(pool, a.typed_data(), b.typed_data(), out, m, k, n);
    return ffi::Error::Success();
  }
  if (!trans_a && !trans_b && stored::Supported(m)) {
    stored::Multiply(pool, a.typed_data(), b.typed_data(), out, m, k, n);
    return ffi::Error::Success();
  }
#endif
  scipy_cblas_sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, static_cast<int>(m),
                    static_cast<int>(n), static_cast<int>(k), 1.f, a.typed_data(), static_cast<int>(ad[1]),
                    b.typed_data(), static_cast<int>(bd[1]), 0.f, out, static_cast<int>(n));
  return ffi::Error::Success();
}

// y_i = x w_i for one x [m, k] (m <= kMaxRows) and several weights w_i [k, n_i] stored [K, N]: a decode step's
// q, k and v projections in one call, their columns split over the threads together (k and v alone are too
// small for the handler's thresholds; on XLA's dot they ran at ~15 GB/s).
ffi::Error FewRowsMany(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::RemainingArgs weights,
                       ffi::RemainingRets outputs) {
  const auto xd = x.dimensions();
  if (xd.size() != 2 || weights.size() == 0 || weights.size() != outputs.size()) {
    return ffi::Error::InvalidArgument("atomsearch_few_rows_many: x [m, k] and as many outputs as weights (>= 1)");
  }
  const int64_t m = xd[0], k = xd[1];
#ifdef ATOMSEARCH_HAVE_FEW_ROWS
  if (!stored::Supported(m)) {
    return ffi::Error::InvalidArgument("atomsearch_few_rows_many: needs 1-8 rows and an AVX-512 CPU");
  }
  std::vector<const float*> ws;
  std::vector<float*> ys;
  std::vector<int64_t> offsets{0};  // column offsets of the weights side by side
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto w = weights.get<ffi::Buffer<ffi::F32>>(i);
    auto y = outputs.get<ffi::Buffer<ffi::F32>>(i);
    if (w.has_error() || y.has_error()) return ffi::Error::InvalidArgument("atomsearch_few_rows_many: float32 buffers");
    const auto wd = w->dimensions(), yd = (*y)->dimensions();
    if (wd.size() != 2 || wd[0] != k || yd.size() != 2 || yd[0] != m || yd[1] != wd[1]) {
      return ffi::Error::InvalidArgument("atomsearch_few_rows_many: operand shapes do not agree");
    }
    ws.push_back(w->typed_data());
    ys.push_back((*y)->typed_data());
    offsets.push_back(offsets.back() + wd[1]);
  }
  const stored::BlockFn block = stored::BlockFor(m);
  const float* xs = x.typed_data();
  const int64_t total = offsets.back();
  if (stored::SplitsRows(m, total)) {
    // As stored::Multiply: threads split the weights' rows (contiguous memory), each chunk's partial sums
    // of all outputs side by side (faster than by columns for Qwen2.5-0.5B's q/k/v at 8 rows).
    thread_local std::vector<float> sums;
    sums.resize(static_cast<size_t>(m * total));
    parallel::SumOverRows(pool, k, total, stored::kBlockRows, sums.data(), m * total,
                          [&](float* out, int64_t k0, int64_t k1) {
                            for (size_t i = 0; i < ws.size(); ++i) {
                              const int64_t n = offsets[i + 1] - offsets[i];
                              block(xs, ws[i], out + m * offsets[i], true, k, n, k0, k1, 0, n);
                            }
                          });
    for (size_t i = 0; i < ws.size(); ++i) {
      std::copy(sums.data() + m * offsets[i], sums.data() + m * offsets[i + 1], ys[i]);
    }
    return ffi::Error::Success();
  }
  parallel::Columns(pool, total, k, 16, [&](int64_t c0, int64_t c1) {
    for (size_t i = 0; i < ws.size(); ++i) {  // the part of [c0, c1) that falls in weight i
      const int64_t n = offsets[i + 1] - offsets[i], n0 = std::max(c0, offsets[i]) - offsets[i];
      const int64_t n1 = std::min(c1, offsets[i + 1]) - offsets[i];
      if (n0 < n1) block(xs, ws[i], ys[i], true, k, n, 0, k, n0, n1);
    }
  });
  return ffi::Error::Success();
#else
  return ffi::Error::InvalidArgument("atomsearch_few_rows_many: needs an x86-64 build");
#endif
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AtomsearchSgemm, Sgemm,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AtomsearchFewRowsMany, FewRowsMany,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets());
