// The bias_act op: its schema, argument checks and CPU kernel. The CUDA
// kernel (bias_act.cu) registers itself for the same op when built with it.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>
#include <algorithm>
#include <vector>
#include "bias_act.h"

namespace bias_act {

//------------------------------------------------------------------------
// Argument checks, shared with the CUDA kernel.

static void check_like_x(const std::optional<at::Tensor>& t, const at::Tensor& x, const char* name)
{
    if (!t) return;
    TORCH_CHECK(t->sizes() == x.sizes() && t->dtype() == x.dtype() && t->device() == x.device(),
        "bias_act: ", name, " must have the shape, dtype and device of x");
    // Size-1 dimensions, and empty tensors, have no layout to match.
    for (int64_t i = 0; i < x.dim() && x.numel() > 0; i++)
        TORCH_CHECK(x.size(i) < 2 || t->stride(i) == x.stride(i), "bias_act: ", name, " must have the memory layout of x");
}

Args prepare(const at::Tensor& x, const std::optional<at::Tensor>& b, const std::optional<at::Tensor>& xref,
    const std::optional<at::Tensor>& yref, const std::optional<at::Tensor>& dy,
    int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp)
{
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be non-overlapping and dense");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
    if (b)
    {
        TORCH_CHECK(b->dim() == 1 && b->is_contiguous(), "bias_act: b must be a contiguous vector");
        TORCH_CHECK(b->dtype() == x.dtype() && b->device() == x.device(), "bias_act: b must have the dtype and device of x");
        TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim is out of range");
        TORCH_CHECK(b->numel() == x.size(dim), "bias_act: b must have x.shape[dim] elements");
    }
    check_like_x(xref, x, "xref");
    check_like_x(yref, x, "yref");
    check_like_x(dy, x, "dy");

    // What the requested derivative reads (see bias_act.h).
    bool ref_x = false;
    dispatch(act, grad, [&](auto a, auto) { ref_x = decltype(a)::ref_x; });
    if (grad >= 1)
    {
        TORCH_CHECK(!ref_x || xref, "bias_act: the derivatives of this activation need xref");
        TORCH_CHECK(ref_x || yref, "bias_act: the derivatives of this activation need yref");
    }
    TORCH_CHECK(grad < 2 || dy, "bias_act: the second derivative needs dy");

    Args a;
    a.out = at::empty_like(x); // Keeps the strides of x, which is dense.
    a.x = x.data_ptr();
    a.b = b ? b->data_ptr() : nullptr;
    a.xref = xref ? xref->data_ptr() : nullptr;
    a.yref = yref ? yref->data_ptr() : nullptr;
    a.dy = dy ? dy->data_ptr() : nullptr;
    a.size = x.numel();
    a.bias_len = b ? b->numel() : 0;
    // A bias of one element is a single run, whatever the stride of its dimension.
    a.bias_step = (b && x.size(dim) > 1) ? x.stride(dim) : std::max<int64_t>(a.size, 1);
    a.grad = (int)grad;
    a.act = (int)act;
    a.alpha = alpha;
    a.gain = gain;
    a.clamp = clamp;
    return a;
}

//------------------------------------------------------------------------
// CPU kernel.

// Elements per parallel task: small tensors are not worth waking threads for.
constexpr int64_t kGrain = 32768;

// The bias pattern is expanded into a row of whole periods of at least
// kMinRow elements, so that the spans are long, as long as the row needs no
// more than kMaxRow elements; otherwise each run of one bias value is a span.
constexpr int64_t kMinRow = 4096;
constexpr int64_t kMaxRow = 16384;

// Each span loop is compiled once rather than at every call site, which
// keeps the build short; a call per span costs nothing measurable.
#ifdef _MSC_VER
#define BA_NOINLINE __declspec(noinline)
#else
#define BA_NOINLINE __attribute__((noinline))
#endif

// One stretch of n elements meeting bias b[i * BStep]: BStep 0 broadcasts a
// single bias value, BStep 1 walks a bias row. Plain loop over restrict
// pointers, which the compiler vectorizes (p is passed by value so that its
// fields are registers, not loads it would have to keep conditional).
template <class Act, int G, int BStep, class T>
BA_NOINLINE static void run_span(int64_t n, const T* __restrict__ x, const T* __restrict__ b, const T* __restrict__ xref,
    const T* __restrict__ yref, const T* __restrict__ dy, T* __restrict__ out, Params<compute_t<T>> p)
{
    using S = compute_t<T>;
    for (int64_t i = 0; i < n; i++)
    {
        S bi = S(b[i * BStep]);
        if constexpr (G == 0)
            out[i] = T(forward_element<Act>(S(x[i]), bi, p));
        else
        {
            S xb = Act::ref_x ? S(xref[i]) + bi : S(0);
            S yr = Act::ref_x ? S(0) : S(yref[i]);
            S d = (G == 2) ? S(dy[i]) : S(1);
            out[i] = T(backward_element<Act, G>(S(x[i]), xb, yr, d, p));
        }
    }
}

using Broadcast = std::integral_constant<int, 0>;
using Row = std::integral_constant<int, 1>;

// Splits the elements among threads in spans that each meet a stretch of a
// bias row (the pattern of period len * step, repeated), or a single bias
// value (runs, where the pattern is too long to expand), and calls
// span(bstep, i, n, bias) on each.
template <class T, class Span> static void run_biased(const Args& a, const T* b, const Span& span)
{
    const int64_t step = a.bias_step;
    const int64_t len = a.bias_len;
    const int64_t period = len * step;
    if (step > 1 && period > kMaxRow)
    {
        at::parallel_for(0, a.size, kGrain, [&](int64_t begin, int64_t end)
        {
            for (int64_t i = begin; i < end;)
            {
                int64_t run = i / step;
                int64_t n = std::min(end, (run + 1) * step) - i;
                span(Broadcast{}, i, n, b + run % len);
                i += n;
            }
        });
        return;
    }

    // b itself is the row when its pattern is long enough already.
    const int64_t wanted = std::min(kMinRow, a.size);
    const int64_t row_len = period * ((wanted + period - 1) / period);
    std::vector<T> row;
    if (row_len > len)
    {
        row.resize(row_len);
        for (int64_t c = 0; c < len; c++)
            std::fill_n(row.data() + c * step, step, b[c]);
        for (int64_t i = period; i < row_len; i += period)
            std::copy_n(row.data(), period, row.data() + i);
    }
    const T* pattern = row.empty() ? b : row.data();
    at::parallel_for(0, a.size, kGrain, [&](int64_t begin, int64_t end)
    {
        for (int64_t i = begin; i < end;)
        {
            int64_t offset = i % row_len;
            int64_t n = std::min(end - i, row_len - offset);
            span(Row{}, i, n, pattern + offset);
            i += n;
        }
    });
}

template <class Act, int G, class T> static void run_cpu(const Args& a)
{
    const Params<compute_t<T>> p = make_params<compute_t<T>>(a);
    const T* x = static_cast<const T*>(a.x);
    const T* b = static_cast<const T*>(a.b);
    const T* xref = static_cast<const T*>(a.xref);
    const T* yref = static_cast<const T*>(a.yref);
    const T* dy = static_cast<const T*>(a.dy);
    T* out = static_cast<T*>(a.out.data_ptr());

    // Runs elements [i, i + n) with the given bias stretch.
    auto span = [&](auto bstep, int64_t i, int64_t n, const T* bias)
    {
        run_span<Act, G, decltype(bstep)::value>(n, x + i, bias, xref ? xref + i : nullptr,
            yref ? yref + i : nullptr, dy ? dy + i : nullptr, out + i, p);
    };

    // The forward pass reads the bias; derivatives only when computed from x.
    if constexpr (G == 0 || Act::ref_x)
    {
        if (b)
        {
            run_biased(a, b, span);
            return;
        }
    }
    const T zero = T(0);
    at::parallel_for(0, a.size, kGrain, [&](int64_t begin, int64_t end) { span(Broadcast{}, begin, end - begin, &zero); });
}

static at::Tensor bias_act_cpu(const at::Tensor& x, const std::optional<at::Tensor>& b,
    const std::optional<at::Tensor>& xref, const std::optional<at::Tensor>& yref, const std::optional<at::Tensor>& dy,
    int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp)
{
    Args a = prepare(x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp);
    if (a.size == 0)
        return a.out;
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "bias_act_cpu", [&]
    {
        dispatch(a.act, a.grad, [&](auto act_tag, auto grad_tag)
        {
            run_cpu<decltype(act_tag), decltype(grad_tag)::value, scalar_t>(a);
        });
    });
    return a.out;
}

} // namespace bias_act

//------------------------------------------------------------------------

TORCH_LIBRARY(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act(Tensor x, Tensor? b, Tensor? xref, Tensor? yref, Tensor? dy, "
          "int grad, int dim, int act, float alpha, float gain, float clamp) -> Tensor");
}

TORCH_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CPU, m)
{
    m.impl("bias_act", &bias_act::bias_act_cpu);
}
