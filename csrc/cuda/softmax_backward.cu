// Backward of y = softmax(scores * scale + mask): grad_scores = scale * y * (grad - sum(grad * y)),
// from the output and its gradient alone. Rows of a fully masked softmax are zeros, so their
// gradient is zero too. Same row layouts as the forward kernels (softmax.cuh).
#include <ATen/ATen.h>

#include <climits>

#include "../kernels.h"
#include "common.cuh"
#include "softmax.cuh"

namespace cnbert {
namespace {

using namespace cuda;

template <int ITERS, int V, typename T>
__device__ __forceinline__ float load_row(float (&y)[ITERS][V], float (&g)[ITERS][V], const T* out, const T* grad,
                                          int sk, int lane_offset, int stride) {
  float dot = 0.f;
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = (it * stride + lane_offset) * V;
    if (c < sk) {
      const Pack<T, V> yp = load_pack<V>(out + c);
      const Pack<T, V> gp = load_pack<V>(grad + c);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        y[it][j] = static_cast<float>(yp.v[j]);
        g[it][j] = static_cast<float>(gp.v[j]);
        dot += y[it][j] * g[it][j];
      }
    }
  }
  return dot;
}

template <int ITERS, int V, typename T>
__device__ __forceinline__ void store_row(T* grad_in, const float (&y)[ITERS][V], const float (&g)[ITERS][V],
                                          float dot, float scale, int sk, int lane_offset, int stride) {
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = (it * stride + lane_offset) * V;
    if (c < sk) {
      Pack<T, V> pack;
#pragma unroll
      for (int j = 0; j < V; ++j) pack.v[j] = static_cast<T>(scale * y[it][j] * (g[it][j] - dot));
      store_pack<V>(grad_in + c, pack);
    }
  }
}

template <typename T, int V, int ITERS>
__global__ void __launch_bounds__(kWarpRowsPerBlock * 32)
    softmax_backward_warp(const T* __restrict__ grad, const T* __restrict__ out, T* __restrict__ grad_in,
                          int64_t rows, int sk, float scale) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  float y[ITERS][V];
  float g[ITERS][V];
  const float dot = warp_reduce(load_row<ITERS, V>(y, g, out + row * sk, grad + row * sk, sk, lane, 32), SumOp{});
  store_row<ITERS, V>(grad_in + row * sk, y, g, dot, scale, sk, lane, 32);
}

template <typename T, int V, int ITERS>
__global__ void __launch_bounds__(kRowThreads)
    softmax_backward_block(const T* __restrict__ grad, const T* __restrict__ out, T* __restrict__ grad_in, int sk,
                           float scale) {
  __shared__ float scratch[kRowThreads / 32];
  const int64_t row = blockIdx.x;
  float y[ITERS][V];
  float g[ITERS][V];
  const float local = load_row<ITERS, V>(y, g, out + row * sk, grad + row * sk, sk, threadIdx.x, kRowThreads);
  const float dot = block_reduce<kRowThreads>(local, scratch, SumOp{});
  store_row<ITERS, V>(grad_in + row * sk, y, g, dot, scale, sk, threadIdx.x, kRowThreads);
}

template <typename T>
__global__ void __launch_bounds__(kOnlineThreads)
    softmax_backward_online(const T* __restrict__ grad, const T* __restrict__ out, T* __restrict__ grad_in,
                            int64_t sk, float scale) {
  __shared__ float scratch[kOnlineThreads / 32];
  const int64_t row = blockIdx.x;
  grad += row * sk;
  out += row * sk;
  grad_in += row * sk;
  float local = 0.f;
  for (int64_t c = threadIdx.x; c < sk; c += kOnlineThreads) {
    local += static_cast<float>(out[c]) * static_cast<float>(grad[c]);
  }
  const float dot = block_reduce<kOnlineThreads>(local, scratch, SumOp{});
  for (int64_t c = threadIdx.x; c < sk; c += kOnlineThreads) {
    grad_in[c] = static_cast<T>(scale * static_cast<float>(out[c]) * (static_cast<float>(grad[c]) - dot));
  }
}

template <typename T>
struct BackwardLaunch {
  const T* grad;
  const T* out;
  T* grad_in;
  int64_t rows;
  int sk;
  float scale;
  cudaStream_t stream;

  template <int V, int ITERS>
  bool warp() const {
    if (sk > 32 * V * ITERS) return false;
    softmax_backward_warp<T, V, ITERS>
        <<<warp_kernel_blocks(rows), kWarpRowsPerBlock * 32, 0, stream>>>(grad, out, grad_in, rows, sk, scale);
    return true;
  }

  template <int V, int ITERS>
  bool block() const {
    if (sk > kRowThreads * V * ITERS) return false;
    softmax_backward_block<T, V, ITERS><<<row_kernel_blocks(rows), kRowThreads, 0, stream>>>(grad, out, grad_in, sk, scale);
    return true;
  }

  void online() const {
    softmax_backward_online<T><<<row_kernel_blocks(rows), kOnlineThreads, 0, stream>>>(grad, out, grad_in, sk, scale);
  }
};

}  // namespace

void softmax_backward_cuda(const at::Tensor& grad, const at::Tensor& out, double scale, at::Tensor& grad_scores) {
  const c10::cuda::OptionalCUDAGuard guard(out.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t sk = out.size(-1);
  const int64_t rows = out.numel() / sk;
  TORCH_CHECK(sk <= INT_MAX, "cnbert::scaled_masked_softmax_backward: Sk = ", sk, " is too large");
  CNBERT_DISPATCH_CUDA_TYPES(out.scalar_type(), "cnbert_softmax_backward_cuda", [&] {
    constexpr int V = kPackOf16Bytes<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* y = out.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_scores.mutable_data_ptr<scalar_t>();
    const bool vectorised = sk % V == 0 && is_aligned(g, 16) && is_aligned(y, 16) && is_aligned(gi, 16);
    const BackwardLaunch<scalar_t> launch{g, y, gi, rows, static_cast<int>(sk), static_cast<float>(scale), stream};
    launch_softmax_rows<scalar_t>(launch, vectorised);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cnbert
