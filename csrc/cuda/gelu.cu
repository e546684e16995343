// GELU and bias + GELU on CUDA, forward and backward. Memory-bound: 16-byte loads and stores,
// float32 math, several independent loads in flight per thread.
#include <ATen/ATen.h>

#include <algorithm>

#include "../kernels.h"
#include "common.cuh"

namespace cnbert {
namespace {

using cuda::is_aligned;
using cuda::kPackOf16Bytes;
using cuda::load_pack;
using cuda::Pack;
using cuda::store_pack;

constexpr int kThreads = 256;

// Element-wise kernels: a grid-stride loop over packs of V elements, then the n % V tail.
template <typename T, int V, Approx A>
__global__ void __launch_bounds__(kThreads)
    gelu_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  const int64_t packs = n / V;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t p = first; p < packs; p += step) {
    const Pack<T, V> in = load_pack<V>(x + p * V);
    Pack<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) out.v[j] = static_cast<T>(gelu_value<A>(static_cast<float>(in.v[j])));
    store_pack<V>(y + p * V, out);
  }
  const int64_t i = packs * V + first;
  if (i < n) y[i] = static_cast<T>(gelu_value<A>(static_cast<float>(x[i])));
}

template <typename T, int V, Approx A>
__global__ void __launch_bounds__(kThreads)
    gelu_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x, T* __restrict__ grad_x, int64_t n) {
  const int64_t packs = n / V;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t p = first; p < packs; p += step) {
    const Pack<T, V> g = load_pack<V>(grad + p * V);
    const Pack<T, V> in = load_pack<V>(x + p * V);
    Pack<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      out.v[j] = static_cast<T>(static_cast<float>(g.v[j]) * gelu_derivative<A>(static_cast<float>(in.v[j])));
    }
    store_pack<V>(grad_x + p * V, out);
  }
  const int64_t i = packs * V + first;
  if (i < n) grad_x[i] = static_cast<T>(static_cast<float>(grad[i]) * gelu_derivative<A>(static_cast<float>(x[i])));
}

// Enough blocks to fill the card a few times over; the grid-stride loop covers the rest.
unsigned elementwise_blocks(int64_t packs) {
  const int64_t wanted = std::max<int64_t>(1, (packs + kThreads - 1) / kThreads);
  return static_cast<unsigned>(std::min<int64_t>(wanted, int64_t(cuda::multiprocessor_count()) * 32));
}

// Bias kernels: x viewed as [rows, n]. Each thread owns V adjacent columns (so it loads its bias
// once) and walks a band of rows, kRowUnroll rows at a time with all their loads issued first.
// The backward pass also sums its columns of grad_x over its band, in float32, into
// partial[band, n]; the bands are then summed in a fixed order, so the result is deterministic.
constexpr int kBiasThreads = 128;
constexpr int kRowUnroll = 4;

template <typename T, int V, Approx A>
__global__ void __launch_bounds__(kBiasThreads)
    bias_gelu_forward_kernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y,
                             int64_t rows, int64_t n, int64_t rows_per_band) {
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (c >= n) return;
  const Pack<T, V> bias_pack = load_pack<V>(bias + c);
  float b[V];
#pragma unroll
  for (int j = 0; j < V; ++j) b[j] = static_cast<float>(bias_pack.v[j]);
  const int64_t row_begin = static_cast<int64_t>(blockIdx.y) * rows_per_band;
  const int64_t row_end = std::min(rows, row_begin + rows_per_band);
  for (int64_t r = row_begin; r < row_end; r += kRowUnroll) {
    Pack<T, V> in[kRowUnroll];
#pragma unroll
    for (int u = 0; u < kRowUnroll; ++u) {
      if (r + u < row_end) in[u] = load_pack<V>(x + (r + u) * n + c);
    }
#pragma unroll
    for (int u = 0; u < kRowUnroll; ++u) {
      if (r + u < row_end) {
        Pack<T, V> out;
#pragma unroll
        for (int j = 0; j < V; ++j) out.v[j] = static_cast<T>(gelu_value<A>(static_cast<float>(in[u].v[j]) + b[j]));
        store_pack<V>(y + (r + u) * n + c, out);
      }
    }
  }
}

template <typename T, int V, Approx A>
__global__ void __launch_bounds__(kBiasThreads)
    bias_gelu_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x, const T* __restrict__ bias,
                              T* __restrict__ grad_x, float* __restrict__ partial, int64_t rows, int64_t n,
                              int64_t rows_per_band) {
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (c >= n) return;
  const Pack<T, V> bias_pack = load_pack<V>(bias + c);
  float b[V];
  float sum[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    b[j] = static_cast<float>(bias_pack.v[j]);
    sum[j] = 0.f;
  }
  const int64_t row_begin = static_cast<int64_t>(blockIdx.y) * rows_per_band;
  const int64_t row_end = std::min(rows, row_begin + rows_per_band);
  for (int64_t r = row_begin; r < row_end; r += kRowUnroll) {
    Pack<T, V> g[kRowUnroll];
    Pack<T, V> in[kRowUnroll];
#pragma unroll
    for (int u = 0; u < kRowUnroll; ++u) {
      if (r + u < row_end) {
        g[u] = load_pack<V>(grad + (r + u) * n + c);
        in[u] = load_pack<V>(x + (r + u) * n + c);
      }
    }
#pragma unroll
    for (int u = 0; u < kRowUnroll; ++u) {
      if (r + u < row_end) {
        Pack<T, V> out;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const float d = static_cast<float>(g[u].v[j]) * gelu_derivative<A>(static_cast<float>(in[u].v[j]) + b[j]);
          out.v[j] = static_cast<T>(d);
          sum[j] += d;
        }
        store_pack<V>(grad_x + (r + u) * n + c, out);
      }
    }
  }
  float* band_sums = partial + static_cast<int64_t>(blockIdx.y) * n + c;
#pragma unroll
  for (int j = 0; j < V; ++j) band_sums[j] = sum[j];
}

// Grid for the bias kernels: column blocks times bands of rows, as many blocks in all as `kernel`
// keeps resident at once (one wave: a second, partly filled wave would leave multiprocessors idle
// at its end), and no more bands than gridDim.y allows.
struct BiasGrid {
  dim3 grid, block;
  int64_t rows_per_band;
};

template <typename Kernel>
BiasGrid bias_grid(int64_t rows, int64_t n, int vec, Kernel kernel) {
  const int64_t packs_per_row = (n + vec - 1) / vec;
  const int64_t threads = std::min<int64_t>(kBiasThreads, (packs_per_row + 31) / 32 * 32);
  const int64_t column_blocks = (packs_per_row + threads - 1) / threads;
  int blocks_per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, kernel, static_cast<int>(threads), 0));
  const int64_t wanted_bands = std::max<int64_t>(
      1, int64_t(cuda::multiprocessor_count()) * std::max(blocks_per_sm, 1) / column_blocks);
  int64_t rows_per_band = std::max<int64_t>((rows + wanted_bands - 1) / wanted_bands, (rows + 65534) / 65535);
  rows_per_band = std::max<int64_t>(1, rows_per_band);
  const int64_t bands = (rows + rows_per_band - 1) / rows_per_band;
  TORCH_CHECK(column_blocks <= 0x7fffffff, "cnbert::bias_gelu: last dimension ", n, " is too large");
  return {dim3(static_cast<unsigned>(column_blocks), static_cast<unsigned>(bands)),
          dim3(static_cast<unsigned>(threads)), rows_per_band};
}

}  // namespace

void gelu_forward_cuda(const at::Tensor& x, at::Tensor& y, Approx a) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = x.numel();
  CNBERT_DISPATCH_CUDA_TYPES(x.scalar_type(), "cnbert_gelu_cuda", [&] {
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* out = y.mutable_data_ptr<scalar_t>();
    dispatch_approx(a, [&](auto approx) {
      constexpr Approx A = decltype(approx)::value;
      constexpr int V = kPackOf16Bytes<scalar_t>;
      if (is_aligned(in, 16) && is_aligned(out, 16)) {
        gelu_forward_kernel<scalar_t, V, A><<<elementwise_blocks(n / V), kThreads, 0, stream>>>(in, out, n);
      } else {
        gelu_forward_kernel<scalar_t, 1, A><<<elementwise_blocks(n), kThreads, 0, stream>>>(in, out, n);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void gelu_backward_cuda(const at::Tensor& grad, const at::Tensor& x, at::Tensor& grad_x, Approx a) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = x.numel();
  CNBERT_DISPATCH_CUDA_TYPES(x.scalar_type(), "cnbert_gelu_backward_cuda", [&] {
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* out = grad_x.mutable_data_ptr<scalar_t>();
    dispatch_approx(a, [&](auto approx) {
      constexpr Approx A = decltype(approx)::value;
      constexpr int V = kPackOf16Bytes<scalar_t>;
      if (is_aligned(g, 16) && is_aligned(in, 16) && is_aligned(out, 16)) {
        gelu_backward_kernel<scalar_t, V, A><<<elementwise_blocks(n / V), kThreads, 0, stream>>>(g, in, out, n);
      } else {
        gelu_backward_kernel<scalar_t, 1, A><<<elementwise_blocks(n), kThreads, 0, stream>>>(g, in, out, n);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void bias_gelu_forward_cuda(const at::Tensor& x, const at::Tensor& bias, at::Tensor& y, Approx a) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = bias.numel();
  const int64_t rows = x.numel() / n;
  CNBERT_DISPATCH_CUDA_TYPES(x.scalar_type(), "cnbert_bias_gelu_cuda", [&] {
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    const scalar_t* b = bias.const_data_ptr<scalar_t>();
    scalar_t* out = y.mutable_data_ptr<scalar_t>();
    dispatch_approx(a, [&](auto approx) {
      constexpr Approx A = decltype(approx)::value;
      constexpr int V = kPackOf16Bytes<scalar_t>;
      if (n % V == 0 && is_aligned(in, 16) && is_aligned(b, 16) && is_aligned(out, 16)) {
        const auto kernel = bias_gelu_forward_kernel<scalar_t, V, A>;
        const BiasGrid g = bias_grid(rows, n, V, kernel);
        kernel<<<g.grid, g.block, 0, stream>>>(in, b, out, rows, n, g.rows_per_band);
      } else {
        const auto kernel = bias_gelu_forward_kernel<scalar_t, 1, A>;
        const BiasGrid g = bias_grid(rows, n, 1, kernel);
        kernel<<<g.grid, g.block, 0, stream>>>(in, b, out, rows, n, g.rows_per_band);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void bias_gelu_backward_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& bias,
                             at::Tensor& grad_x, at::Tensor& grad_bias, Approx a) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = bias.numel();
  const int64_t rows = x.numel() / n;
  at::Tensor partial;
  CNBERT_DISPATCH_CUDA_TYPES(x.scalar_type(), "cnbert_bias_gelu_backward_cuda", [&] {
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    const scalar_t* b = bias.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_x.mutable_data_ptr<scalar_t>();
    dispatch_approx(a, [&](auto approx) {
      constexpr Approx A = decltype(approx)::value;
      constexpr int V = kPackOf16Bytes<scalar_t>;
      const bool vectorised = n % V == 0 && is_aligned(g, 16) && is_aligned(in, 16) && is_aligned(b, 16) &&
                              is_aligned(gx, 16);
      const auto kernel = vectorised ? bias_gelu_backward_kernel<scalar_t, V, A> : bias_gelu_backward_kernel<scalar_t, 1, A>;
      const BiasGrid grid = bias_grid(rows, n, vectorised ? V : 1, kernel);
      partial = at::empty({static_cast<int64_t>(grid.grid.y), n}, x.options().dtype(at::kFloat));
      float* p = partial.mutable_data_ptr<float>();
      kernel<<<grid.grid, grid.block, 0, stream>>>(g, in, b, gx, p, rows, n, grid.rows_per_band);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  grad_bias.copy_(partial.sum(0));
}

int cuda_kernel_image(int device) {
  TORCH_CHECK(device >= 0 && device < c10::cuda::device_count(), "cnbert: no CUDA device ", device);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  cudaFuncAttributes attributes;
  const cudaError_t status = cudaFuncGetAttributes(&attributes, gelu_forward_kernel<float, 1, Approx::kNone>);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear this (non-sticky) error so that it does not surface later
    cudaDeviceProp props;
    C10_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
    TORCH_CHECK(false, "cnbert: this build has no CUDA kernels for device ", device, " (", props.name,
                ", compute capability ", props.major, ".", props.minor, "): ", cudaGetErrorString(status),
                ". Rebuild with TORCH_CUDA_ARCH_LIST=\"", props.major, ".", props.minor, "\" (see BUILD.md).");
  }
  return attributes.binaryVersion;
}

}  // namespace cnbert
