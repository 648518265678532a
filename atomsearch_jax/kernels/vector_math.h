// Vectorised float math shared by the handlers (flash_attention.cc, decode_attention.cc).
#ifndef ATOMSEARCH_KERNELS_VECTOR_MATH_H_
#define ATOMSEARCH_KERNELS_VECTOR_MATH_H_

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

namespace vector_math {

// exp(x) for 8 floats (Cephes' polynomial after a range reduction by ln 2; relative error ~2e-7); -inf -> 0.
__attribute__((target("avx2,fma"))) inline __m256 Exp(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
  x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i pow2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  const __m256 result = _mm256_mul_ps(y, _mm256_castsi256_ps(pow2));
  // The clamp turned -inf (a masked score) into exp(-88.4) ~ 4e-39; masked entries must be exactly 0.
  return _mm256_and_ps(result, _mm256_cmp_ps(x, lo, _CMP_GT_OQ));
}

}  // namespace vector_math
#endif

#endif  // ATOMSEARCH_KERNELS_VECTOR_MATH_H_
