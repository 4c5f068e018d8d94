// The bias_upsample_lrelu op of filtered_lrelu: its schema and argument
// checks. Its only kernel is CUDA (filtered_lrelu.cu); elsewhere
// filtered_lrelu.py runs the pure-PyTorch reference.
//
// bias_upsample_lrelu(x, b, fu, up, pad_x0, pad_x1, pad_y0, pad_y1, flip, up_gain, slope, gain, clamp, write_grad)
// returns (y, dy_dv): y is the leaky ReLU (slope, gain, clamp; clamp < 0
// for none) of the upfirdn2d pass of x + b with the 2D float32 filter fu
// (up along both axes, the given padding, flip, gain up_gain), and dy_dv the
// derivative of the activation at each pixel of y, or an empty tensor unless
// write_grad. Both have the dtype and memory format of x.

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

} // namespace filtered_lrelu

//------------------------------------------------------------------------

TORCH_LIBRARY(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_upsample_lrelu(Tensor x, Tensor? b, Tensor fu, int up, int pad_x0, int pad_x1, int pad_y0, int pad_y1, "
          "bool flip, float up_gain, float slope, float gain, float clamp, bool write_grad) -> (Tensor, Tensor)");
}
