// The upfirdn2d op: its schema and CPU kernel. The CUDA kernel
// (upfirdn2d.cu) registers itself for the same op when built with it.
//
// upfirdn2d(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip, gain)
// is one pass with the 2D float32 filter f (a separable filter is two passes,
// made by upfirdn2d.py). x is [N, C, H, W], dense, contiguous or channels_last;
// the output keeps its memory format and dtype. See upfirdn2d.h for the math.

#include <ATen/Dispatch.h>
#include <torch/library.h>
#include "upfirdn2d.h"

namespace upfirdn2d {

// The CUDA kernel's thread body, one output element per iteration of a parallel loop.
static at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y,
    int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip, double gain)
{
    const Geometry g = make_geometry(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip, gain, "upfirdn2d");
    at::Tensor y = empty_output(g, x);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cpu", [&]
    {
        using S = acc_t<scalar_t>;
        const scalar_t* xp = x.data_ptr<scalar_t>();
        const float* fp = f.data_ptr<float>();
        scalar_t* yp = y.data_ptr<scalar_t>();
        for_each_pixel(g, [&](int64_t i, const Pixel& p)
        {
            yp[i] = scalar_t(fir_pixel<S>(g, fp, p, [&](int offset) { return S(xp[offset]); }));
        });
    });
    return y;
}

} // namespace upfirdn2d

//------------------------------------------------------------------------

TORCH_LIBRARY(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d(Tensor x, Tensor f, int up_x, int up_y, int down_x, int down_y, "
          "int pad_x0, int pad_x1, int pad_y0, int pad_y1, bool flip, float gain) -> Tensor");
}

TORCH_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CPU, m)
{
    m.impl("upfirdn2d", &upfirdn2d::upfirdn2d_cpu);
}
