// The bias_upsample_lrelu op of filtered_lrelu: its schema, argument checks
// and CPU kernel. The CUDA kernel (filtered_lrelu.cu) registers itself for
// the same op when built with it.
//
// bias_upsample_lrelu(x, b, fu, up, pad_x0, pad_x1, pad_y0, pad_y1, flip, up_gain, slope, gain, clamp, write_grad)
// returns (y, dy_dv): y is the leaky ReLU (slope, gain, clamp; clamp < 0
// for none) of the upfirdn2d pass of x + b with the 2D float32 filter fu
// (up along both axes, the given padding, flip, gain up_gain), and dy_dv the
// derivative of the activation at each pixel of y, or an empty tensor unless
// write_grad. Both have the dtype and memory format of x.

#include <ATen/Dispatch.h>
#include <torch/library.h>
#include "filtered_lrelu.h"

namespace filtered_lrelu {

upfirdn2d::Geometry prepare(const at::Tensor& x, const std::optional<at::Tensor>& b, const at::Tensor& fu, int64_t up,
    int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip, double up_gain)
{
    upfirdn2d::Geometry g = upfirdn2d::make_geometry(x, fu, up, up, 1, 1, pad_x0, pad_x1, pad_y0, pad_y1, flip, up_gain, "filtered_lrelu");
    if (b)
    {
        TORCH_CHECK(b->dim() == 1 && b->is_contiguous(), "filtered_lrelu: b must be a contiguous vector");
        TORCH_CHECK(b->dtype() == x.dtype() && b->device() == x.device(), "filtered_lrelu: b must have the dtype and device of x");
        TORCH_CHECK(b->numel() == x.size(1), "filtered_lrelu: b must have x.shape[1] elements");
    }
    return g;
}

// The CUDA kernel's thread body, one output element per iteration of a parallel loop.
static std::tuple<at::Tensor, at::Tensor> bias_upsample_lrelu_cpu(const at::Tensor& x, const std::optional<at::Tensor>& b,
    const at::Tensor& fu, int64_t up, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip,
    double up_gain, double slope, double gain, double clamp, bool write_grad)
{
    const upfirdn2d::Geometry g = prepare(x, b, fu, up, pad_x0, pad_x1, pad_y0, pad_y1, flip, up_gain);
    at::Tensor y, dy_dv;
    std::tie(y, dy_dv) = empty_outputs(g, x, write_grad);
    const Activation a = make_activation(slope, gain, clamp);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "filtered_lrelu_cpu", [&]
    {
        const scalar_t* xp = x.data_ptr<scalar_t>();
        const scalar_t* bp = b ? b->data_ptr<scalar_t>() : nullptr;
        const float* fp = fu.data_ptr<float>();
        scalar_t* yp = y.data_ptr<scalar_t>();
        scalar_t* gp = write_grad ? dy_dv.data_ptr<scalar_t>() : nullptr;
        upfirdn2d::for_each_pixel(g, [&](int64_t i, const upfirdn2d::Pixel& p)
        {
            bias_upsample_lrelu_pixel(g, xp, bp, fp, a, yp, gp, (uint32_t)i, p);
        });
    });
    return {y, dy_dv};
}

} // namespace filtered_lrelu

//------------------------------------------------------------------------

TORCH_LIBRARY(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_upsample_lrelu(Tensor x, Tensor? b, Tensor fu, int up, int pad_x0, int pad_x1, int pad_y0, int pad_y1, "
          "bool flip, float up_gain, float slope, float gain, float clamp, bool write_grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CPU, m)
{
    m.impl("bias_upsample_lrelu", &filtered_lrelu::bias_upsample_lrelu_cpu);
}
