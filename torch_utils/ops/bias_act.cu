// CUDA kernel of the bias_act op, registered for the op that bias_act.cpp
// defines. The per-element math is shared with the CPU kernel (bias_act.h).

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <climits>
#include <cstdint>
#include <torch/library.h>
#include "bias_act.h"

namespace bias_act {

//------------------------------------------------------------------------

constexpr int kBlockSize = 128;
constexpr int kPerThread = 4; // Elements per thread, a block apart, so that each warp reads contiguous memory.

// 32-bit indexing: the launcher checks that the tensor has fewer than 2^31
// elements, so indices stay below 2^32 even one block past the end.
template <class T> struct KernelArgs
{
    const T* x;
    const T* b;     // Null when the bias is not read.
    const T* xref;
    const T* yref;
    const T* dy;
    T* out;
    uint32_t size;
    uint32_t bias_len;
    uint32_t bias_step;
};

template <class Act, int G, class T>
__global__ void bias_act_kernel(KernelArgs<T> k, Params<compute_t<T>> p)
{
    using S = compute_t<T>;
    uint32_t i = blockIdx.x * (uint32_t)(kBlockSize * kPerThread) + threadIdx.x;
    for (int j = 0; j < kPerThread && i < k.size; j++, i += kBlockSize)
    {
        S b = k.b ? S(k.b[(i / k.bias_step) % k.bias_len]) : S(0);
        if constexpr (G == 0)
            k.out[i] = T(forward_element<Act>(S(k.x[i]), b, p));
        else
        {
            S xb = Act::ref_x ? S(k.xref[i]) + b : S(0);
            S yr = Act::ref_x ? S(0) : S(k.yref[i]);
            S d = (G == 2) ? S(k.dy[i]) : S(1);
            k.out[i] = T(backward_element<Act, G>(S(k.x[i]), xb, yr, d, p));
        }
    }
}

template <class Act, int G, class T> static void launch(const Args& a)
{
    // The forward pass reads the bias; derivatives only when computed from x.
    constexpr bool reads_bias = (G == 0 || Act::ref_x);
    KernelArgs<T> k;
    k.x = static_cast<const T*>(a.x);
    k.b = reads_bias ? static_cast<const T*>(a.b) : nullptr;
    k.xref = static_cast<const T*>(a.xref);
    k.yref = static_cast<const T*>(a.yref);
    k.dy = static_cast<const T*>(a.dy);
    k.out = static_cast<T*>(a.out.data_ptr());
    k.size = (uint32_t)a.size;
    k.bias_len = (uint32_t)a.bias_len;
    k.bias_step = (uint32_t)a.bias_step;

    int blocks = (int)((a.size - 1) / (kBlockSize * kPerThread) + 1);
    bias_act_kernel<Act, G, T><<<blocks, kBlockSize, 0, c10::cuda::getCurrentCUDAStream()>>>(k, make_params<compute_t<T>>(a));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

static at::Tensor bias_act_cuda(const at::Tensor& x, const std::optional<at::Tensor>& b,
    const std::optional<at::Tensor>& xref, const std::optional<at::Tensor>& yref, const std::optional<at::Tensor>& dy,
    int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp)
{
    const c10::cuda::OptionalCUDAGuard device_guard(x.device());
    Args a = prepare(x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp);
    if (a.size == 0)
        return a.out;
    TORCH_CHECK(a.size <= INT_MAX, "bias_act: the CUDA kernel takes tensors of fewer than 2^31 elements");
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cuda", [&]
    {
        dispatch(a.act, a.grad, [&](auto act_tag, auto grad_tag)
        {
            launch<decltype(act_tag), decltype(grad_tag)::value, scalar_t>(a);
        });
    });
    return a.out;
}

} // namespace bias_act

//------------------------------------------------------------------------

TORCH_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CUDA, m)
{
    m.impl("bias_act", &bias_act::bias_act_cuda);
}
