// Shared by the softmax forward and backward kernels: how a row of Sk values is spread over
// threads, and which kernel a given Sk gets.
//
//   Sk <= 1024              one warp per row (4 rows per block), the row held in registers;
//   Sk <= 8192, vectorised  one block of 128 threads per row, the row held in registers;
//   otherwise               one block of 256 threads per row, reading the row twice (online
//                           max/sum, then the output): slower, for any Sk.
// "Vectorised" means 16-byte accesses: Sk a multiple of 16 / sizeof(T) and aligned pointers;
// other Sk up to 1024 take the warp kernels with one element per access.
#pragma once

#include <cstdint>

#include "common.cuh"

namespace cnbert {
namespace cuda {

constexpr int kWarpRowsPerBlock = 4;
constexpr int kRowThreads = 128;
constexpr int kOnlineThreads = 256;

// Tries the register-resident kernels from the smallest capacity up; `Launch` provides
// `warp<V, ITERS>()` and `block<V, ITERS>()` (each returns false when Sk exceeds its capacity:
// 32 * V * ITERS or kRowThreads * V * ITERS) and `online()`.
template <typename T, typename Launch>
void launch_softmax_rows(const Launch& l, bool vectorised) {
  constexpr int V = kPackOf16Bytes<T>;
  static_assert(V == 4 || V == 8, "16-byte packs of float32 or 16-bit types");
  bool launched = false;
  if (vectorised) {
    if constexpr (V == 8) {
      launched = l.template warp<8, 1>() || l.template warp<8, 2>() || l.template warp<8, 4>() ||
                 l.template block<8, 2>() || l.template block<8, 4>() || l.template block<8, 8>();
    } else {
      launched = l.template warp<4, 1>() || l.template warp<4, 2>() || l.template warp<4, 4>() ||
                 l.template warp<4, 8>() || l.template block<4, 4>() || l.template block<4, 8>() ||
                 l.template block<4, 16>();
    }
  } else {
    launched = l.template warp<1, 1>() || l.template warp<1, 2>() || l.template warp<1, 4>() ||
               l.template warp<1, 8>() || l.template warp<1, 16>() || l.template warp<1, 32>();
  }
  if (!launched) l.online();
}

inline unsigned warp_kernel_blocks(int64_t rows) {
  const int64_t blocks = (rows + kWarpRowsPerBlock - 1) / kWarpRowsPerBlock;
  TORCH_CHECK(blocks <= 0x7fffffff, "cnbert softmax: ", rows, " rows exceed the CUDA grid");
  return static_cast<unsigned>(blocks);
}

inline unsigned row_kernel_blocks(int64_t rows) {
  TORCH_CHECK(rows <= 0x7fffffff, "cnbert softmax: ", rows, " rows exceed the CUDA grid");
  return static_cast<unsigned>(rows);
}

}  // namespace cuda
}  // namespace cnbert
