// CUDA kernel of the upfirdn2d op (schema and CPU kernel in upfirdn2d.cpp):
// one thread per output element, summing the filter taps that meet input
// samples (upfirdn2d.h, whose per-pixel code the CPU kernel runs as well).

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include "upfirdn2d.h"

namespace upfirdn2d {

template <class T>
__global__ void upfirdn2d_kernel(Geometry g, const T* __restrict__ x, const float* __restrict__ f, T* __restrict__ y, uint32_t size)
{
    using S = acc_t<T>;
    const uint32_t i = blockIdx.x * (uint32_t)kBlockSize + threadIdx.x;
    if (i >= size)
        return;
    y[i] = T(fir_pixel<S>(g, f, output_pixel(g, i), [&](int offset) { return S(x[offset]); }));
}

static at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y,
    int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip, double gain)
{
    const c10::cuda::OptionalCUDAGuard device_guard(x.device());
    const Geometry g = make_geometry(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip, gain, "upfirdn2d");
    at::Tensor y = empty_output(g, x);
    const int64_t size = output_size(g);
    if (size == 0)
        return y;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&]
    {
        upfirdn2d_kernel<scalar_t><<<num_blocks(size), kBlockSize, 0, c10::cuda::getCurrentCUDAStream()>>>(
            g, x.data_ptr<scalar_t>(), f.data_ptr<float>(), y.data_ptr<scalar_t>(), (uint32_t)size);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return y;
}

} // namespace upfirdn2d

//------------------------------------------------------------------------

TORCH_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CUDA, m)
{
    m.impl("upfirdn2d", &upfirdn2d::upfirdn2d_cuda);
}
