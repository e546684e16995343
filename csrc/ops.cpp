// The cnbert::* operators: schemas, argument checks and the CPU/CUDA implementations behind them,
// plus the pybind11 module `cnbert._C` that loads them. Fake (meta) implementations and autograd
// formulas are registered from Python (cnbert/kernels/_extension.py).
#include <ATen/ATen.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <limits>
#include <string>
#include <tuple>

#include "kernels.h"

namespace cnbert {
namespace {

Approx parse_approximate(c10::string_view approximate) {
  if (approximate == "none") return Approx::kNone;
  if (approximate == "tanh") return Approx::kTanh;
  if (approximate == "sigmoid") return Approx::kSigmoid;
  TORCH_CHECK(false, "cnbert: approximate must be 'none' (exact erf GELU), 'tanh' or 'sigmoid' ",
              "(x*sigmoid(1.702x), blocksparse's fast_gelu), got '", std::string(approximate), "'");
}

void check_floating(const at::Tensor& t, const char* op, const char* name) {
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              op, ": ", name, " must be float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(!(t.is_cuda() && dtype == at::kDouble), op, ": ", name,
              " is float64 on CUDA; the CUDA kernels take float32, float16 and bfloat16 ",
              "(cnbert.kernels routes float64 to the pure-torch reference)");
}

void check_same(const at::Tensor& a, const at::Tensor& b, const char* op, const char* names) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", names, " must share a dtype, got ",
              a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.device() == b.device(), op, ": ", names, " must be on one device, got ", a.device(),
              " and ", b.device());
}

at::Tensor empty_like_contiguous(const at::Tensor& t) { return at::empty(t.sizes(), t.options()); }

at::Tensor gelu(const at::Tensor& x, c10::string_view approximate) {
  const Approx a = parse_approximate(approximate);
  check_floating(x, "cnbert::gelu", "x");
  const at::Tensor xc = x.contiguous();
  at::Tensor y = empty_like_contiguous(xc);
  if (xc.numel() == 0) return y;
#ifdef CNBERT_WITH_CUDA
  if (xc.is_cuda()) {
    gelu_forward_cuda(xc, y, a);
    return y;
  }
#endif
  gelu_forward_cpu(xc, y, a);
  return y;
}

at::Tensor gelu_backward(const at::Tensor& grad, const at::Tensor& x, c10::string_view approximate) {
  const Approx a = parse_approximate(approximate);
  check_floating(x, "cnbert::gelu_backward", "x");
  check_same(grad, x, "cnbert::gelu_backward", "grad and x");
  TORCH_CHECK(grad.sizes() == x.sizes(), "cnbert::gelu_backward: grad ", grad.sizes(),
              " and x ", x.sizes(), " differ in shape");
  const at::Tensor gc = grad.contiguous();
  const at::Tensor xc = x.contiguous();
  at::Tensor gx = empty_like_contiguous(xc);
  if (xc.numel() == 0) return gx;
#ifdef CNBERT_WITH_CUDA
  if (xc.is_cuda()) {
    gelu_backward_cuda(gc, xc, gx, a);
    return gx;
  }
#endif
  gelu_backward_cpu(gc, xc, gx, a);
  return gx;
}

void check_bias(const at::Tensor& x, const at::Tensor& bias, const char* op) {
  check_floating(x, op, "x");
  check_same(x, bias, op, "x and bias");
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least one dimension");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == x.size(-1), op, ": bias must be 1-D of size ",
              x.size(-1), " (x's last dimension), got shape ", bias.sizes());
}

at::Tensor bias_gelu(const at::Tensor& x, const at::Tensor& bias, c10::string_view approximate) {
  const Approx a = parse_approximate(approximate);
  check_bias(x, bias, "cnbert::bias_gelu");
  const at::Tensor xc = x.contiguous();
  const at::Tensor bc = bias.contiguous();
  at::Tensor y = empty_like_contiguous(xc);
  if (xc.numel() == 0) return y;
#ifdef CNBERT_WITH_CUDA
  if (xc.is_cuda()) {
    bias_gelu_forward_cuda(xc, bc, y, a);
    return y;
  }
#endif
  bias_gelu_forward_cpu(xc, bc, y, a);
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_gelu_backward(const at::Tensor& grad, const at::Tensor& x,
                                                      const at::Tensor& bias, c10::string_view approximate) {
  const Approx a = parse_approximate(approximate);
  check_bias(x, bias, "cnbert::bias_gelu_backward");
  check_same(grad, x, "cnbert::bias_gelu_backward", "grad and x");
  TORCH_CHECK(grad.sizes() == x.sizes(), "cnbert::bias_gelu_backward: grad ", grad.sizes(),
              " and x ", x.sizes(), " differ in shape");
  const at::Tensor gc = grad.contiguous();
  const at::Tensor xc = x.contiguous();
  const at::Tensor bc = bias.contiguous();
  at::Tensor gx = empty_like_contiguous(xc);
  if (xc.numel() == 0) return {gx, at::zeros(bias.sizes(), bias.options())};
  at::Tensor gb = empty_like_contiguous(bc);
#ifdef CNBERT_WITH_CUDA
  if (xc.is_cuda()) {
    bias_gelu_backward_cuda(gc, xc, bc, gx, gb, a);
    return {gx, gb};
  }
#endif
  bias_gelu_backward_cpu(gc, xc, bc, gx, gb, a);
  return {gx, gb};
}

// Checks the mask against scores [B, H, Sq, Sk], brings it to a dtype the kernels read (bool,
// float32 or the scores' dtype) and describes how rows of scores map to rows of the mask.
std::optional<at::Tensor> prepare_mask(const at::Tensor& scores, const std::optional<at::Tensor>& mask,
                                       MaskRows& rows) {
  rows.heads = scores.size(1);
  rows.queries = scores.size(2);
  if (!mask.has_value()) return std::nullopt;
  at::Tensor m = *mask;
  const char* op = "cnbert::scaled_masked_softmax";
  TORCH_CHECK(m.device() == scores.device(), op, ": mask is on ", m.device(), ", scores on ",
              scores.device());
  TORCH_CHECK(m.dim() == 4, op, ": mask must be 4-D ([B, 1, 1, Sk] key padding or [B or 1, 1, Sq, Sk]),"
              " got shape ", m.sizes());
  for (int d = 0; d < 3; ++d) {
    TORCH_CHECK(m.size(d) == 1 || m.size(d) == scores.size(d), op, ": mask shape ", m.sizes(),
                " does not broadcast to scores ", scores.sizes(), " (dimension ", d, ")");
  }
  TORCH_CHECK(m.size(3) == scores.size(3), op, ": mask's last dimension is ", m.size(3),
              ", scores have Sk = ", scores.size(3));
  const auto dtype = m.scalar_type();
  TORCH_CHECK(dtype == at::kBool || at::isFloatingType(dtype), op,
              ": mask must be bool (True = attend) or an additive floating mask, got ", dtype,
              "; convert 0/1 integer masks with mask.bool()");
  // Never materialise a broadcast mask (e.g. mask.expand(B, 1, Sq, Sk) from [B, 1, 1, Sk]): a
  // stride-0 dimension of size > 1 holds one distinct slice, so narrow it to size 1 before any
  // cast or copy below (rows.stride_* treat size-1 dimensions as broadcast). The kernels read a
  // mask row as Sk contiguous elements, so a stride-0 last dimension is narrowed too, cast, and
  // only then expanded back and copied: one Sk-long row per distinct mask row, never a copy along
  // a broadcast dimension.
  for (int d = 0; d < 3; ++d) {
    if (m.size(d) > 1 && m.stride(d) == 0) m = m.narrow(d, 0, 1);
  }
  const bool broadcast_keys = m.size(3) > 1 && m.stride(3) == 0;
  if (broadcast_keys) m = m.narrow(3, 0, 1);
  if (dtype != at::kBool && dtype != at::kFloat && dtype != scores.scalar_type()) {
    at::Tensor narrowed = m.to(at::kFloat);
    // A finite float64 value beyond float32's range would round to +-inf, masking a row fully (or
    // giving NaN) where the unfused chain shifts it: such values are clamped to float32's largest
    // finite magnitude, true +-inf kept. Only a mask with infinities after the cast needs a look.
    if (dtype == at::kDouble && at::isinf(narrowed).any().item<bool>() &&
        at::isinf(narrowed).sum().item<int64_t>() != at::isinf(m).sum().item<int64_t>()) {
      const double lo = std::numeric_limits<float>::lowest(), hi = std::numeric_limits<float>::max();
      narrowed = at::where(at::isinf(m), m, m.clamp(lo, hi)).to(at::kFloat);
    }
    m = narrowed;
  }
  if (broadcast_keys) m = m.expand({m.size(0), m.size(1), m.size(2), scores.size(3)});
  if (m.size(3) > 1 && m.stride(3) != 1) m = m.contiguous();
  rows.stride_b = m.size(0) == 1 ? 0 : m.stride(0);
  rows.stride_h = m.size(1) == 1 ? 0 : m.stride(1);
  rows.stride_q = m.size(2) == 1 ? 0 : m.stride(2);
  return m;
}

at::Tensor scaled_masked_softmax(const at::Tensor& scores, const std::optional<at::Tensor>& mask,
                                 double scale) {
  check_floating(scores, "cnbert::scaled_masked_softmax", "scores");
  TORCH_CHECK(scores.dim() == 4, "cnbert::scaled_masked_softmax: scores must be 4-D [B, H, Sq, Sk], got shape ",
              scores.sizes());
  MaskRows rows;
  const std::optional<at::Tensor> m = prepare_mask(scores, mask, rows);
  const at::Tensor sc = scores.contiguous();
  at::Tensor out = empty_like_contiguous(sc);
  if (sc.numel() == 0) return out;
#ifdef CNBERT_WITH_CUDA
  if (sc.is_cuda()) {
    softmax_forward_cuda(sc, m, rows, scale, out);
    return out;
  }
#endif
  softmax_forward_cpu(sc, m, rows, scale, out);
  return out;
}

at::Tensor scaled_masked_softmax_backward(const at::Tensor& grad, const at::Tensor& out, double scale) {
  const char* op = "cnbert::scaled_masked_softmax_backward";
  check_floating(out, op, "output");
  check_same(grad, out, op, "grad and output");
  TORCH_CHECK(grad.sizes() == out.sizes(), op, ": grad ", grad.sizes(), " and output ", out.sizes(),
              " differ in shape");
  TORCH_CHECK(out.dim() >= 1, op, ": output must have at least one dimension");
  const at::Tensor gc = grad.contiguous();
  const at::Tensor oc = out.contiguous();
  at::Tensor grad_scores = empty_like_contiguous(oc);
  if (oc.numel() == 0) return grad_scores;
#ifdef CNBERT_WITH_CUDA
  if (oc.is_cuda()) {
    softmax_backward_cuda(gc, oc, scale, grad_scores);
    return grad_scores;
  }
#endif
  softmax_backward_cpu(gc, oc, scale, grad_scores);
  return grad_scores;
}

}  // namespace

TORCH_LIBRARY(cnbert, m) {
  m.def("gelu(Tensor x, str approximate) -> Tensor");
  m.def("gelu_backward(Tensor grad, Tensor x, str approximate) -> Tensor");
  m.def("bias_gelu(Tensor x, Tensor bias, str approximate) -> Tensor");
  m.def("bias_gelu_backward(Tensor grad, Tensor x, Tensor bias, str approximate) -> (Tensor, Tensor)");
  m.def("scaled_masked_softmax(Tensor scores, Tensor? mask, float scale) -> Tensor");
  m.def("scaled_masked_softmax_backward(Tensor grad, Tensor output, float scale) -> Tensor");
}

// One implementation per op serves both devices; each picks its kernels from the tensor's device.
#define CNBERT_REGISTER_IMPLS(m)                                                \
  m.impl("gelu", &gelu);                                                        \
  m.impl("gelu_backward", &gelu_backward);                                      \
  m.impl("bias_gelu", &bias_gelu);                                              \
  m.impl("bias_gelu_backward", &bias_gelu_backward);                            \
  m.impl("scaled_masked_softmax", &scaled_masked_softmax);                      \
  m.impl("scaled_masked_softmax_backward", &scaled_masked_softmax_backward);

TORCH_LIBRARY_IMPL(cnbert, CPU, m) { CNBERT_REGISTER_IMPLS(m) }
#ifdef CNBERT_WITH_CUDA
TORCH_LIBRARY_IMPL(cnbert, CUDA, m) { CNBERT_REGISTER_IMPLS(m) }
#endif

}  // namespace cnbert

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "cnbert fused kernels; the ops themselves are torch.ops.cnbert.*";
  module.def("build_info", [] {
    pybind11::dict info;
#ifdef CNBERT_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
#if defined(CNBERT_TORCH_MAJOR) && defined(CNBERT_TORCH_MINOR)
    info["torch_version"] = std::to_string(CNBERT_TORCH_MAJOR) + "." + std::to_string(CNBERT_TORCH_MINOR);
#endif
    return info;
  }, "How this extension was built: with CUDA kernels or not, against which torch (major.minor).");
#ifdef CNBERT_WITH_CUDA
  module.def("cuda_kernel_image", &cnbert::cuda_kernel_image, pybind11::arg("device"),
             "Compute capability (e.g. 90) of the machine code or PTX this build holds for a CUDA "
             "device; raises when the build has none for it ('no kernel image').");
#endif
}
