// CUDA kernel of the bias_upsample_lrelu op (schema and CPU kernel in
// filtered_lrelu.cpp): one thread per pixel of the upsampled image, which
// filters the biased input samples (upfirdn2d.h) and applies the activation
// (filtered_lrelu.h), in the per-pixel code that the CPU kernel runs as well.

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <tuple>
#include "filtered_lrelu.h"

namespace filtered_lrelu {

using upfirdn2d::Geometry;

template <class T>
__global__ void bias_upsample_lrelu_kernel(Geometry g, const T* __restrict__ x, const T* __restrict__ b,
    const float* __restrict__ f, Activation a, T* __restrict__ y, T* __restrict__ dy_dv, uint32_t size)
{
    const uint32_t i = blockIdx.x * (uint32_t)upfirdn2d::kBlockSize + threadIdx.x;
    if (i < size)
        bias_upsample_lrelu_pixel(g, x, b, f, a, y, dy_dv, i, upfirdn2d::output_pixel(g, i));
}

static std::tuple<at::Tensor, at::Tensor> bias_upsample_lrelu_cuda(const at::Tensor& x, const std::optional<at::Tensor>& b,
    const at::Tensor& fu, int64_t up, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip,
    double up_gain, double slope, double gain, double clamp, bool write_grad)
{
    const c10::cuda::OptionalCUDAGuard device_guard(x.device());
    const Geometry g = prepare(x, b, fu, up, pad_x0, pad_x1, pad_y0, pad_y1, flip, up_gain);
    at::Tensor y, dy_dv;
    std::tie(y, dy_dv) = empty_outputs(g, x, write_grad);
    const int64_t size = upfirdn2d::output_size(g);
    if (size == 0)
        return {y, dy_dv};
    const Activation a = make_activation(slope, gain, clamp);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "filtered_lrelu_cuda", [&]
    {
        const scalar_t* bias = b ? b->data_ptr<scalar_t>() : nullptr;
        bias_upsample_lrelu_kernel<scalar_t><<<upfirdn2d::num_blocks(size), upfirdn2d::kBlockSize, 0, c10::cuda::getCurrentCUDAStream()>>>(
            g, x.data_ptr<scalar_t>(), bias, fu.data_ptr<float>(), a, y.data_ptr<scalar_t>(),
            write_grad ? dy_dv.data_ptr<scalar_t>() : nullptr, (uint32_t)size);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {y, dy_dv};
}

} // namespace filtered_lrelu

//------------------------------------------------------------------------

TORCH_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CUDA, m)
{
    m.impl("bias_upsample_lrelu", &filtered_lrelu::bias_upsample_lrelu_cuda);
}
