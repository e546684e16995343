// GELU and its derivative, shared by the CPU and CUDA kernels (host and device code).
//
// T is the accumulation type: float for float32/float16/bfloat16 inputs, double for float64.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

namespace cnbert {

// Which GELU: the exact erf form (BERT's `gelu`), the tanh approximation, or the sigmoid form
// x*sigmoid(1.702x) that openai/blocksparse called `fast_gelu` (up to 2e-2 away from exact).
enum class Approx : int { kNone = 0, kTanh = 1, kSigmoid = 2 };

// Overloads rather than std:: calls, so that the same source compiles for the device.
C10_HOST_DEVICE inline float erfc_(float x) { return ::erfcf(x); }
C10_HOST_DEVICE inline double erfc_(double x) { return ::erfc(x); }
C10_HOST_DEVICE inline float exp_(float x) { return ::expf(x); }
C10_HOST_DEVICE inline double exp_(double x) { return ::exp(x); }

template <typename T>
struct GeluConstants {
  static constexpr T kSqrtHalf = T(0.70710678118654752440);    // 1/sqrt(2)
  static constexpr T kInvSqrt2Pi = T(0.39894228040143267794);  // 1/sqrt(2*pi)
  static constexpr T kBeta = T(0.79788456080286535588);        // sqrt(2/pi)
  static constexpr T kKappa = T(0.044715);
  static constexpr T kSigmoidSlope = T(1.702);
  // Beyond this |x|, s * (1 - s) below is exactly 0 in float32 and float64; clamping x there
  // keeps x^2 finite, where 0 * inf would give NaN.
  static constexpr T kClamp = T(1e5);
};

// The formulas avoid 1 + erf(x) and 1 + tanh(x), which lose all relative precision for x < -3:
//   exact:   gelu(x) = x * Phi(x),           Phi(x) = erfc(-x / sqrt 2) / 2
//   tanh:    gelu(x) = x * (1 + tanh u) / 2 = x * sigmoid(2u),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   sigmoid: gelu(x) = x * sigmoid(1.702 x)
// with sigmoid(z) = 1 / (1 + e^-z): for very negative z, e^-z overflows to inf and the result
// is a correctly signed zero rather than inf * 0.
template <typename T>
C10_HOST_DEVICE inline T sigmoid_(T z) {
  return T(1) / (T(1) + exp_(-z));
}

template <typename T>
C10_HOST_DEVICE inline T clamp_large(T x) {
  using K = GeluConstants<T>;
  return x < -K::kClamp ? -K::kClamp : (x > K::kClamp ? K::kClamp : x);
}

template <Approx A, typename T>
C10_HOST_DEVICE inline T gelu_value(T x) {
  using K = GeluConstants<T>;
  if constexpr (A == Approx::kNone) {
    return T(0.5) * x * erfc_(-x * K::kSqrtHalf);
  } else if constexpr (A == Approx::kTanh) {
    return x * sigmoid_(T(2) * K::kBeta * (x + K::kKappa * x * x * x));
  } else {
    return x * sigmoid_(K::kSigmoidSlope * x);
  }
}

// d gelu(x) / dx.
template <Approx A, typename T>
C10_HOST_DEVICE inline T gelu_derivative(T x) {
  using K = GeluConstants<T>;
  if constexpr (A == Approx::kNone) {
    const T pdf = K::kInvSqrt2Pi * exp_(T(-0.5) * x * x);
    return T(0.5) * erfc_(-x * K::kSqrtHalf) + x * pdf;
  } else if constexpr (A == Approx::kTanh) {
    // d/dx [x s(2u)] = s + x * 2 s (1 - s) * du/dx.
    const T s = sigmoid_(T(2) * K::kBeta * (x + K::kKappa * x * x * x));
    const T xc = clamp_large(x);
    const T du = K::kBeta * (T(1) + T(3) * K::kKappa * xc * xc);
    return s + T(2) * (s * (T(1) - s)) * xc * du;
  } else {
    // d/dx [x s(kx)] = s + kx s (1 - s).
    const T s = sigmoid_(K::kSigmoidSlope * x);
    return s + (s * (T(1) - s)) * (K::kSigmoidSlope * clamp_large(x));
  }
}

}  // namespace cnbert
