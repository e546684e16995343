// Kernel entry points shared by the op registration (ops.cpp), the CPU kernels (cpu_kernels.cpp)
// and the CUDA kernels (cuda/*.cu). Every entry point receives tensors that ops.cpp has already
// validated: contiguous, non-empty, of matching dtypes and devices, outputs allocated.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <optional>

#include <cstdint>
#include <type_traits>

#include "gelu_math.h"

namespace cnbert {

// Where a row of scores [B, H, Sq, Sk] finds its row of the mask: the mask is read through its
// strides (0 along broadcast dimensions), so a [B, 1, 1, Sk] mask is never expanded in memory.
struct MaskRows {
  int64_t heads = 1, queries = 1;
  int64_t stride_b = 0, stride_h = 0, stride_q = 0;

  C10_HOST_DEVICE int64_t offset(int64_t row) const {
    const int64_t q = row % queries;
    const int64_t bh = row / queries;
    return (bh / heads) * stride_b + (bh % heads) * stride_h + q * stride_q;
  }
};

// The larger of a and b, and NaN when either is NaN: the row maximum of the softmax kernels.
// std::max and fmaxf drop a NaN, and a row whose only unmasked logit is NaN would then look fully
// masked and come out as zeros, hiding a diverged run; with this it comes out NaN, as from
// torch.softmax.
template <typename T>
C10_HOST_DEVICE inline T max_keeping_nan(T a, T b) {
  return (a > b || a != a) ? a : b;
}

// Tag type for "no mask" in the templated softmax kernels.
struct NoMask {};

// Calls f with a null pointer whose type names the mask's element type: NoMask, bool, float or
// scalar_t (ops.cpp has cast any other floating mask to float32).
template <typename scalar_t, typename F>
void dispatch_mask(const std::optional<at::Tensor>& mask, F&& f) {
  if (!mask.has_value()) {
    f(static_cast<const NoMask*>(nullptr));
  } else if (mask->scalar_type() == at::kBool) {
    f(static_cast<const bool*>(nullptr));
  } else if (mask->scalar_type() == at::kFloat) {
    f(static_cast<const float*>(nullptr));
  } else {
    TORCH_CHECK(mask->scalar_type() == c10::CppTypeToScalarType<scalar_t>::value,
                "cnbert: internal error: mask dtype ", mask->scalar_type(), " was not normalised");
    f(static_cast<const scalar_t*>(nullptr));
  }
}

template <typename F>
void dispatch_approx(Approx a, F&& f) {
  switch (a) {
    case Approx::kNone: f(std::integral_constant<Approx, Approx::kNone>{}); break;
    case Approx::kTanh: f(std::integral_constant<Approx, Approx::kTanh>{}); break;
    case Approx::kSigmoid: f(std::integral_constant<Approx, Approx::kSigmoid>{}); break;
  }
}

// CPU kernels: float32, float64, float16, bfloat16.
void gelu_forward_cpu(const at::Tensor& x, at::Tensor& y, Approx a);
void gelu_backward_cpu(const at::Tensor& grad, const at::Tensor& x, at::Tensor& grad_x, Approx a);
void bias_gelu_forward_cpu(const at::Tensor& x, const at::Tensor& bias, at::Tensor& y, Approx a);
void bias_gelu_backward_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& bias,
                            at::Tensor& grad_x, at::Tensor& grad_bias, Approx a);
void softmax_forward_cpu(const at::Tensor& scores, const std::optional<at::Tensor>& mask,
                         const MaskRows& mask_rows, double scale, at::Tensor& out);
void softmax_backward_cpu(const at::Tensor& grad, const at::Tensor& out, double scale,
                          at::Tensor& grad_scores);

#ifdef CNBERT_WITH_CUDA
// CUDA kernels: float32, float16, bfloat16, launched on the current stream.
void gelu_forward_cuda(const at::Tensor& x, at::Tensor& y, Approx a);
void gelu_backward_cuda(const at::Tensor& grad, const at::Tensor& x, at::Tensor& grad_x, Approx a);
void bias_gelu_forward_cuda(const at::Tensor& x, const at::Tensor& bias, at::Tensor& y, Approx a);
void bias_gelu_backward_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& bias,
                             at::Tensor& grad_x, at::Tensor& grad_bias, Approx a);
void softmax_forward_cuda(const at::Tensor& scores, const std::optional<at::Tensor>& mask,
                          const MaskRows& mask_rows, double scale, at::Tensor& out);
void softmax_backward_cuda(const at::Tensor& grad, const at::Tensor& out, double scale,
                           at::Tensor& grad_scores);
// The binaryVersion this build's kernels have on `device`; raises if there is no kernel image.
int cuda_kernel_image(int device);
#endif

}  // namespace cnbert
