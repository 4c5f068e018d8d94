// The program of the fused per-pixel stage of bi-line networks (see biline_pixels.cpp): its
// steps and layers, and the argument checks shared by the CPU kernel (biline_pixels.cpp)
// and the CUDA kernel (biline_pixels.cu).

#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <algorithm>
#include <cstdint>
#include <vector>

namespace biline_pixels {

enum Kind : int64_t { OUTER = 0, DENSE = 1 };
constexpr int STEP_FIELDS = 6;   // kind, index, src, dst, accumulate, leaky ReLU.
constexpr int NUM_BUFFERS = 5;
constexpr int IMAGE_BUFFER = 4;

struct Step { int64_t kind, index, src, dst, accumulate, lrelu; };

// A layer's tensors and settings; `weight` is [1 or N, O, I], `bias` [O].
struct LayerArgs
{
    at::Tensor weight, bias;
    int64_t out, in;
    float gain, clamp;  // clamp < 0: none.
};

struct Args
{
    int64_t levels, batch, height, channels, rank, width, img_channels;
    std::vector<LayerArgs> layers;
    std::vector<Step> program;
    int64_t offset[NUM_BUFFERS + 1]; // Buffer b is channels offset[b] to offset[b + 1] of a pixel block's scratch.
};

// Checks the arguments of the op (rows [L, N, H, C, R], cols [L, N, R, C, W], a weight, bias, gain
// and clamp per layer, steps of STEP_FIELDS ints) and follows each buffer's channel count through
// the program, so that every layer reads as many channels as its buffer holds.
inline Args prepare(const at::Tensor& rows, const at::Tensor& cols, at::TensorList weights, at::TensorList biases,
    at::IntArrayRef steps, at::ArrayRef<double> gains, at::ArrayRef<double> clamps, int64_t img_channels)
{
    TORCH_CHECK(rows.dim() == 5 && rows.is_contiguous() && rows.is_floating_point(), "biline_pixels: rows must be a contiguous floating tensor [L, N, H, C, R]");
    TORCH_CHECK(cols.dim() == 5 && cols.scalar_type() == rows.scalar_type() && cols.device() == rows.device(),
        "biline_pixels: cols must be [L, N, R, C, W], of the dtype and device of rows");
    Args a;
    a.levels = rows.size(0); a.batch = rows.size(1); a.height = rows.size(2); a.channels = rows.size(3); a.rank = rows.size(4);
    a.width = cols.size(4); a.img_channels = img_channels;
    TORCH_CHECK(cols.size(0) == a.levels && cols.size(1) == a.batch && cols.size(2) == a.rank && cols.size(3) == a.channels,
        "biline_pixels: cols must be [L, N, R, C, W] for rows [L, N, H, C, R]");
    TORCH_CHECK(weights.size() == biases.size() && gains.size() == weights.size() && clamps.size() == weights.size(),
        "biline_pixels: one bias, gain and clamp per weight");
    TORCH_CHECK(steps.size() % STEP_FIELDS == 0, "biline_pixels: steps must hold ", STEP_FIELDS, " integers each");

    for (size_t k = 0; k < weights.size(); k++)
    {
        const at::Tensor& w = weights[k];
        const at::Tensor& b = biases[k];
        TORCH_CHECK(w.scalar_type() == rows.scalar_type() && w.device() == rows.device() && w.dim() == 3 && w.is_contiguous()
            && (w.size(0) == 1 || w.size(0) == a.batch), "biline_pixels: weight ", k, " must be a contiguous [1 or N, O, I] of the dtype and device of rows");
        TORCH_CHECK(b.scalar_type() == rows.scalar_type() && b.device() == rows.device() && b.dim() == 1 && b.is_contiguous() && b.size(0) == w.size(1),
            "biline_pixels: bias ", k, " must be a contiguous [O] of the dtype and device of rows");
        a.layers.push_back({w, b, w.size(1), w.size(2), (float)gains[k], (float)clamps[k]});
    }
    int64_t held[NUM_BUFFERS] = {}; // Channels in each buffer as the program runs (0: not written yet).
    int64_t capacity[NUM_BUFFERS] = {};
    for (size_t s = 0; s < steps.size(); s += STEP_FIELDS)
    {
        const Step step{steps[s], steps[s + 1], steps[s + 2], steps[s + 3], steps[s + 4], steps[s + 5]};
        TORCH_CHECK(step.kind == OUTER || step.kind == DENSE, "biline_pixels: unknown step kind ", step.kind);
        TORCH_CHECK(step.index >= 0 && step.index < (step.kind == OUTER ? a.levels : (int64_t)a.layers.size()), "biline_pixels: step index out of range");
        TORCH_CHECK(step.dst >= 0 && step.dst < NUM_BUFFERS && (step.kind == OUTER || (step.src >= 0 && step.src < NUM_BUFFERS)),
            "biline_pixels: buffer out of range");
        int64_t width = a.channels;
        if (step.kind == DENSE)
        {
            const LayerArgs& layer = a.layers[step.index];
            TORCH_CHECK(step.dst != step.src, "biline_pixels: a layer cannot write its own input");
            TORCH_CHECK(held[step.src] == layer.in, "biline_pixels: layer ", step.index, " has ", layer.in, " inputs, but its buffer holds ",
                held[step.src], " channels");
            width = layer.out;
        }
        TORCH_CHECK(!step.accumulate || held[step.dst] == width, "biline_pixels: step ", s / STEP_FIELDS, " adds ", width,
            " channels to a buffer of ", held[step.dst]);
        held[step.dst] = width;
        capacity[step.dst] = std::max(capacity[step.dst], width);
        a.program.push_back(step);
    }
    a.offset[0] = 0;
    for (int b = 0; b < NUM_BUFFERS; b++)
        a.offset[b + 1] = a.offset[b] + capacity[b];
    TORCH_CHECK(held[IMAGE_BUFFER] == img_channels, "biline_pixels: the program gives the image ", held[IMAGE_BUFFER],
        " channels instead of ", img_channels);
    return a;
}

} // namespace biline_pixels
