// CPU kernels. Each works on contiguous inputs, converts to the accumulation type (float, or
// double for float64) once per element, and splits rows or element ranges over threads with
// at::parallel_for. Inner loops are plain counted loops over contiguous memory, which the compiler
// vectorises at -O3 where the math allows it.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels.h"

namespace cnbert {
namespace {

// Elements per at::parallel_for task: small tensors stay on one thread.
constexpr int64_t kGrain = 32768;

// Rows per partial bias-gradient sum. Fixed, so the sum's order (and the result) does not depend
// on the number of threads.
constexpr int64_t kBiasRowsPerChunk = 64;

int64_t row_grain(int64_t row_length) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, row_length)); }

}  // namespace

void gelu_forward_cpu(const at::Tensor& x, at::Tensor& y, Approx a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "cnbert_gelu_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* out = y.mutable_data_ptr<scalar_t>();
    dispatch_approx(a, [&](auto approx) {
      constexpr Approx A = decltype(approx)::value;
      at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) out[i] = static_cast<scalar_t>(gelu_value<A>(static_cast<acc_t>(in[i])));
      });
    });
  });
}

void gelu_backward_cpu(const at::Tensor& grad, const at::Tensor& x, at::Tensor& grad_x, Approx a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "cnbert_gelu_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* out = grad_x.mutable_data_ptr<scalar_t>();
    dispatch_approx(a, [&](auto approx) {
      constexpr Approx A = decltype(approx)::value;
      at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          out[i] = static_cast<scalar_t>(static_cast<acc_t>(g[i]) * gelu_derivative<A>(static_cast<acc_t>(in[i])));
        }
      });
    });
  });
}

void bias_gelu_forward_cpu(const at::Tensor& x, const at::Tensor& bias, at::Tensor& y, Approx a) {
  const int64_t n = bias.numel();
  const int64_t rows = x.numel() / n;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "cnbert_bias_gelu_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    const scalar_t* b = bias.const_data_ptr<scalar_t>();
    scalar_t* out = y.mutable_data_ptr<scalar_t>();
    dispatch_approx(a, [&](auto approx) {
      constexpr Approx A = decltype(approx)::value;
      at::parallel_for(0, rows, row_grain(n), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const scalar_t* xr = in + r * n;
          scalar_t* yr = out + r * n;
          for (int64_t c = 0; c < n; ++c) {
            yr[c] = static_cast<scalar_t>(gelu_value<A>(static_cast<acc_t>(xr[c]) + static_cast<acc_t>(b[c])));
          }
        }
      });
    });
  });
}

void bias_gelu_backward_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& bias,
                            at::Tensor& grad_x, at::Tensor& grad_bias, Approx a) {
  const int64_t n = bias.numel();
  const int64_t rows = x.numel() / n;
  const int64_t chunks = (rows + kBiasRowsPerChunk - 1) / kBiasRowsPerChunk;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "cnbert_bias_gelu_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    const scalar_t* b = bias.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_x.mutable_data_ptr<scalar_t>();
    // Partial column sums of grad_x, one row of n per chunk of rows, in the accumulation type.
    std::vector<acc_t> partial(static_cast<size_t>(chunks * n), acc_t(0));
    dispatch_approx(a, [&](auto approx) {
      constexpr Approx A = decltype(approx)::value;
      at::parallel_for(0, chunks, std::max<int64_t>(1, row_grain(n) / kBiasRowsPerChunk), [&](int64_t begin, int64_t end) {
        for (int64_t chunk = begin; chunk < end; ++chunk) {
          acc_t* sums = partial.data() + chunk * n;
          const int64_t row_end = std::min(rows, (chunk + 1) * kBiasRowsPerChunk);
          for (int64_t r = chunk * kBiasRowsPerChunk; r < row_end; ++r) {
            for (int64_t c = 0; c < n; ++c) {
              const int64_t i = r * n + c;
              const acc_t d = static_cast<acc_t>(g[i]) *
                              gelu_derivative<A>(static_cast<acc_t>(in[i]) + static_cast<acc_t>(b[c]));
              gx[i] = static_cast<scalar_t>(d);
              sums[c] += d;
            }
          }
        }
      });
    });
    scalar_t* gb = grad_bias.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain / std::max<int64_t>(1, chunks), [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        acc_t total = 0;
        for (int64_t chunk = 0; chunk < chunks; ++chunk) total += partial[chunk * n + c];
        gb[c] = static_cast<scalar_t>(total);
      }
    });
  });
}

namespace {

// One row of softmax(scores * scale + mask): `row` holds the shifted logits on the way.
template <typename scalar_t, typename mask_t, typename acc_t>
void softmax_row(const scalar_t* x, const mask_t* m, scalar_t* y, int64_t sk, acc_t scale, acc_t* row) {
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  acc_t max_value = kNegInf;
  for (int64_t k = 0; k < sk; ++k) {
    acc_t v = static_cast<acc_t>(x[k]) * scale;
    if constexpr (std::is_same_v<mask_t, bool>) {
      v = m[k] ? v : kNegInf;
    } else if constexpr (!std::is_same_v<mask_t, NoMask>) {
      v += static_cast<acc_t>(m[k]);
    }
    row[k] = v;
    max_value = max_keeping_nan(max_value, v);
  }
  if (max_value == kNegInf) {  // every key masked: the row is all zeros, not NaN
    std::fill(y, y + sk, static_cast<scalar_t>(0));
    return;
  }
  // The row sum runs in double: one running float32 sum of Sk near-equal terms (a large logit
  // among many equal ones) rounds the same way at every step and drifts by ~Sk/2 ulp.
  double sum = 0;
  for (int64_t k = 0; k < sk; ++k) {
    row[k] = std::exp(row[k] - max_value);
    sum += static_cast<double>(row[k]);
  }
  const double inv = 1.0 / sum;
  for (int64_t k = 0; k < sk; ++k) y[k] = static_cast<scalar_t>(static_cast<double>(row[k]) * inv);
}

}  // namespace

void softmax_forward_cpu(const at::Tensor& scores, const std::optional<at::Tensor>& mask,
                         const MaskRows& mask_rows, double scale, at::Tensor& out) {
  const int64_t sk = scores.size(-1);
  const int64_t rows = scores.numel() / sk;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "cnbert_softmax_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = scores.const_data_ptr<scalar_t>();
    scalar_t* y = out.mutable_data_ptr<scalar_t>();
    dispatch_mask<scalar_t>(mask, [&](auto tag) {
      using mask_t = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
      const mask_t* m = nullptr;
      if constexpr (!std::is_same_v<mask_t, NoMask>) m = mask->const_data_ptr<mask_t>();
      at::parallel_for(0, rows, row_grain(sk), [&](int64_t begin, int64_t end) {
        std::vector<acc_t> buffer(static_cast<size_t>(sk));
        for (int64_t r = begin; r < end; ++r) {
          const mask_t* mr = m == nullptr ? nullptr : m + mask_rows.offset(r);
          softmax_row(x + r * sk, mr, y + r * sk, sk, static_cast<acc_t>(scale), buffer.data());
        }
      });
    });
  });
}

void softmax_backward_cpu(const at::Tensor& grad, const at::Tensor& out, double scale, at::Tensor& grad_scores) {
  const int64_t sk = out.size(-1);
  const int64_t rows = out.numel() / sk;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "cnbert_softmax_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* y = out.const_data_ptr<scalar_t>();
    scalar_t* gs = grad_scores.mutable_data_ptr<scalar_t>();
    const acc_t s = static_cast<acc_t>(scale);
    at::parallel_for(0, rows, row_grain(sk), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* gr = g + r * sk;
        const scalar_t* yr = y + r * sk;
        double dot = 0;  // in double, as the forward pass's row sum
        for (int64_t k = 0; k < sk; ++k) dot += static_cast<double>(gr[k]) * static_cast<double>(yr[k]);
        scalar_t* out_row = gs + r * sk;
        for (int64_t k = 0; k < sk; ++k) {
          out_row[k] = static_cast<scalar_t>(s * static_cast<acc_t>(yr[k]) *
                                             static_cast<acc_t>(static_cast<double>(gr[k]) - dot));
        }
      }
    });
  });
}

}  // namespace cnbert
