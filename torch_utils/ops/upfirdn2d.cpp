// The upfirdn2d op: its schema. Its only kernel is CUDA (upfirdn2d.cu);
// elsewhere upfirdn2d.py runs the pure-PyTorch reference.
//
// upfirdn2d(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip, gain)
// is one pass with the 2D float32 filter f (a separable filter is two passes,
// made by upfirdn2d.py). x is [N, C, H, W], dense, contiguous or channels_last;
// the output keeps its memory format and dtype. See upfirdn2d.h for the math.

#include <torch/library.h>

TORCH_LIBRARY(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d(Tensor x, Tensor f, int up_x, int up_y, int down_x, int down_y, "
          "int pad_x0, int pad_x1, int pad_y0, int pad_y1, bool flip, float gain) -> Tensor");
}
