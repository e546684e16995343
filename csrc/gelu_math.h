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

//   exact:   gelu(x) = x * Phi(x), Phi the standard normal CDF (normal_cdf)
//   tanh:    gelu(x) = x * (1 + tanh u) / 2 = x * sigmoid(2u),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   sigmoid: gelu(x) = x * sigmoid(1.702 x)
// with sigmoid(z) = 1 / (1 + e^-z), which keeps relative precision where 1 + tanh would not: for
// very negative z, e^-z overflows to inf and the result is a correctly signed zero rather than inf * 0.
//
// Phi in float (the accumulation type of float32, float16 and bfloat16 inputs) is torch's own
// (1 + erf(x / sqrt 2)) / 2. erfc(-x / sqrt 2) / 2 would keep relative precision below x = -4 too,
// but CUDA's erfcf costs about twice the instructions of erff (in sm_90 machine code, 53 per element
// of the GELU forward against 29), enough by that count to hold the fused bias-GELU below 80 % of
// an H100's copy bandwidth (an estimate, not yet timed); the absolute error stays under 1e-7,
// within the float32 tolerance (cnbert/kernels/testing.py). double keeps the erfc form, accurate to the last
// bit in the tail, for the float64 path that gradcheck and the references use.
C10_HOST_DEVICE inline float normal_cdf(float x) {
  return 0.5f * (1.f + ::erff(x * GeluConstants<float>::kSqrtHalf));
}
C10_HOST_DEVICE inline double normal_cdf(double x) {
  return 0.5 * ::erfc(-x * GeluConstants<double>::kSqrtHalf);
}

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
    return x * normal_cdf(x);
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
    return normal_cdf(x) + x * pdf;
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
