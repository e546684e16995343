// softmax(scores * scale + mask) over the last axis on CUDA. Each row is read once (the
// register-resident kernels) and written once, in float32; the mask is read through its strides.
// A row with every key masked (all logits -inf) is written as zeros; a row holding a NaN logit as NaN.
#include <ATen/ATen.h>

#include <climits>
#include <type_traits>

#include "../kernels.h"
#include "common.cuh"
#include "softmax.cuh"

namespace cnbert {
namespace {

using namespace cuda;

template <int V, typename T>
__device__ __forceinline__ void load_scaled(float (&v)[V], const T* p, float scale) {
  const Pack<T, V> pack = load_pack<V>(p);
#pragma unroll
  for (int j = 0; j < V; ++j) v[j] = static_cast<float>(pack.v[j]) * scale;
}

// Bool masks keep True and send False to -inf; floating masks are added.
template <int V, typename M>
__device__ __forceinline__ void apply_mask(float (&v)[V], const M* row_mask, int64_t c) {
  if constexpr (!std::is_same_v<M, NoMask>) {
    const Pack<M, V> m = load_pack<V>(row_mask + c);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if constexpr (std::is_same_v<M, bool>) {
        v[j] = m.v[j] ? v[j] : -INFINITY;
      } else {
        v[j] += static_cast<float>(m.v[j]);
      }
    }
  }
}

template <typename M>
__device__ __forceinline__ const M* mask_row(const M* mask, const MaskRows& mask_rows, int64_t row) {
  if constexpr (std::is_same_v<M, NoMask>) {
    return nullptr;
  } else {
    return mask + mask_rows.offset(row);
  }
}

// Turns the logits in v (max m, reduced over the row) into probabilities; `Reduce` sums over
// the threads of the row. Returns false for a fully masked row (m = -inf).
template <int ITERS, int V, typename Reduce>
__device__ __forceinline__ bool normalise(float (&v)[ITERS][V], float m, Reduce reduce_sum) {
  if (m == -INFINITY) return false;
  float sum = 0.f;
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      v[it][j] = expf(v[it][j] - m);
      sum += v[it][j];
    }
  }
  const float inv = 1.f / reduce_sum(sum);
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
#pragma unroll
    for (int j = 0; j < V; ++j) v[it][j] *= inv;
  }
  return true;
}

template <int V, typename T>
__device__ __forceinline__ void store_probs(T* p, const float (&v)[V], bool keep) {
  Pack<T, V> pack;
#pragma unroll
  for (int j = 0; j < V; ++j) pack.v[j] = static_cast<T>(keep ? v[j] : 0.f);
  store_pack<V>(p, pack);
}

// Loads this thread's columns (first column `lane_offset * V`, then every `stride * V`).
template <int ITERS, int V, typename T, typename M>
__device__ __forceinline__ void load_row(float (&v)[ITERS][V], const T* x, const M* row_mask, int sk,
                                         float scale, int lane_offset, int stride) {
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = (it * stride + lane_offset) * V;
    if (c < sk) {
      load_scaled<V>(v[it], x + c, scale);
      apply_mask<V>(v[it], row_mask, c);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) v[it][j] = -INFINITY;
    }
  }
}

template <int ITERS, int V>
__device__ __forceinline__ float local_max(const float (&v)[ITERS][V]) {
  float m = -INFINITY;
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
#pragma unroll
    for (int j = 0; j < V; ++j) m = max_keeping_nan(m, v[it][j]);
  }
  return m;
}

struct WarpSum {
  __device__ __forceinline__ float operator()(float v) const { return warp_reduce(v, SumOp{}); }
};

template <typename T, typename M, int V, int ITERS>
__global__ void __launch_bounds__(kWarpRowsPerBlock * 32)
    softmax_forward_warp(const T* __restrict__ x, const M* __restrict__ mask, T* __restrict__ y, int64_t rows,
                         int sk, float scale, MaskRows mask_rows) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps leave together: a warp owns one row
  const int lane = threadIdx.x % 32;
  x += row * sk;
  y += row * sk;
  float v[ITERS][V];
  load_row<ITERS, V>(v, x, mask_row(mask, mask_rows, row), sk, scale, lane, 32);
  const float m = warp_reduce(local_max(v), MaxOp{});
  const bool keep = normalise(v, m, WarpSum{});
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = (it * 32 + lane) * V;
    if (c < sk) store_probs<V>(y + c, v[it], keep);
  }
}

struct BlockSum {
  float* scratch;
  __device__ __forceinline__ float operator()(float v) const {
    return block_reduce<kRowThreads>(v, scratch, SumOp{});
  }
};

template <typename T, typename M, int V, int ITERS>
__global__ void __launch_bounds__(kRowThreads)
    softmax_forward_block(const T* __restrict__ x, const M* __restrict__ mask, T* __restrict__ y, int sk,
                          float scale, MaskRows mask_rows) {
  __shared__ float scratch[kRowThreads / 32];
  const int64_t row = blockIdx.x;
  x += row * sk;
  y += row * sk;
  float v[ITERS][V];
  load_row<ITERS, V>(v, x, mask_row(mask, mask_rows, row), sk, scale, threadIdx.x, kRowThreads);
  const float m = block_reduce<kRowThreads>(local_max(v), scratch, MaxOp{});
  const bool keep = normalise(v, m, BlockSum{scratch});
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = (it * kRowThreads + threadIdx.x) * V;
    if (c < sk) store_probs<V>(y + c, v[it], keep);
  }
}

// (max, sum of exp(v - max)) pairs, merged; -inf entries contribute nothing, and a NaN max
// (a NaN logit) makes both NaN.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float merged = max_keeping_nan(m, m2);
  if (merged == -INFINITY) {
    s = 0.f;
  } else {
    s = s * expf(m - merged) + s2 * expf(m2 - merged);
  }
  m = merged;
}

template <typename T, typename M>
__device__ __forceinline__ float logit(const T* x, const M* row_mask, int64_t c, float scale) {
  float v[1];
  load_scaled<1>(v, x + c, scale);
  apply_mask<1>(v, row_mask, c);
  return v[0];
}

template <typename T, typename M>
__global__ void __launch_bounds__(kOnlineThreads)
    softmax_forward_online(const T* __restrict__ x, const M* __restrict__ mask, T* __restrict__ y, int64_t sk,
                           float scale, MaskRows mask_rows) {
  constexpr int kWarps = kOnlineThreads / 32;
  __shared__ float scratch_max[kWarps];
  __shared__ float scratch_sum[kWarps];
  const int64_t row = blockIdx.x;
  x += row * sk;
  y += row * sk;
  const M* row_mask = mask_row(mask, mask_rows, row);
  float m = -INFINITY;
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < sk; c += kOnlineThreads) {
    const float v = logit(x, row_mask, c, scale);
    if (v == -INFINITY) continue;
    if (v > m || v != v) {  // a NaN logit becomes the max, so that the row comes out NaN
      s = s * expf(m - v) + 1.f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    merge(m, s, __shfl_xor_sync(0xffffffffu, m, offset), __shfl_xor_sync(0xffffffffu, s, offset));
  }
  if (threadIdx.x % 32 == 0) {
    scratch_max[threadIdx.x / 32] = m;
    scratch_sum[threadIdx.x / 32] = s;
  }
  __syncthreads();
  m = scratch_max[0];
  s = scratch_sum[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) merge(m, s, scratch_max[w], scratch_sum[w]);
  if (m == -INFINITY) {
    for (int64_t c = threadIdx.x; c < sk; c += kOnlineThreads) y[c] = static_cast<T>(0.f);
    return;
  }
  const float inv = 1.f / s;
  for (int64_t c = threadIdx.x; c < sk; c += kOnlineThreads) {
    y[c] = static_cast<T>(expf(logit(x, row_mask, c, scale) - m) * inv);
  }
}

template <typename T, typename M>
struct ForwardLaunch {
  const T* x;
  const M* mask;
  T* y;
  int64_t rows;
  int sk;
  float scale;
  MaskRows mask_rows;
  cudaStream_t stream;

  template <int V, int ITERS>
  bool warp() const {
    if (sk > 32 * V * ITERS) return false;
    softmax_forward_warp<T, M, V, ITERS>
        <<<warp_kernel_blocks(rows), kWarpRowsPerBlock * 32, 0, stream>>>(x, mask, y, rows, sk, scale, mask_rows);
    return true;
  }

  template <int V, int ITERS>
  bool block() const {
    if (sk > kRowThreads * V * ITERS) return false;
    softmax_forward_block<T, M, V, ITERS>
        <<<row_kernel_blocks(rows), kRowThreads, 0, stream>>>(x, mask, y, sk, scale, mask_rows);
    return true;
  }

  void online() const {
    softmax_forward_online<T, M><<<row_kernel_blocks(rows), kOnlineThreads, 0, stream>>>(x, mask, y, sk, scale,
                                                                                        mask_rows);
  }
};

}  // namespace

void softmax_forward_cuda(const at::Tensor& scores, const std::optional<at::Tensor>& mask,
                          const MaskRows& mask_rows, double scale, at::Tensor& out) {
  const c10::cuda::OptionalCUDAGuard guard(scores.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t sk = scores.size(-1);
  const int64_t rows = scores.numel() / sk;
  TORCH_CHECK(sk <= INT_MAX, "cnbert::scaled_masked_softmax: Sk = ", sk, " is too large");
  CNBERT_DISPATCH_CUDA_TYPES(scores.scalar_type(), "cnbert_softmax_cuda", [&] {
    constexpr int V = kPackOf16Bytes<scalar_t>;
    const scalar_t* x = scores.const_data_ptr<scalar_t>();
    scalar_t* y = out.mutable_data_ptr<scalar_t>();
    dispatch_mask<scalar_t>(mask, [&](auto tag) {
      using M = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
      const M* m = nullptr;
      bool vectorised = sk % V == 0 && is_aligned(x, 16) && is_aligned(y, 16);
      if constexpr (!std::is_same_v<M, NoMask>) {
        m = mask->const_data_ptr<M>();
        vectorised = vectorised && is_aligned(m, V * sizeof(M)) && mask_rows.stride_b % V == 0 &&
                     mask_rows.stride_h % V == 0 && mask_rows.stride_q % V == 0;
      }
      const ForwardLaunch<scalar_t, M> launch{x, m, y, rows, static_cast<int>(sk), static_cast<float>(scale),
                                              mask_rows, stream};
      launch_softmax_rows<scalar_t>(launch, vectorised);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace cnbert
