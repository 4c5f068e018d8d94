"""Bilinear `grid_sample` whose gradient w.r.t. the input is differentiable again.

`grid_sample(input, grid)` computes

    torch.nn.functional.grid_sample(input, grid, mode='bilinear',
                                    padding_mode='zeros', align_corners=False)

(the only configuration the augmentation pipeline uses), through a custom
autograd function. Older PyTorch releases give `grid_sampler_2d_backward` no
derivative, so R1 regularization through the augmentation, which
differentiates D(augment(x)) w.r.t. x with create_graph=True and then
backpropagates that gradient into D's parameters, fails there. This op
supplies the missing derivative.

Which derivatives exist:
  - first order, w.r.t. input and grid: PyTorch's own backward kernel;
  - any order w.r.t. input: for a fixed grid the output is linear in the
    input, out = S(grid) input, so its input gradient is S^T grad_out, linear
    in grad_out, and the derivative of that w.r.t. grad_out is S again, i.e.
    grid_sample itself (which is again this op);
  - second order involving the grid (the grid gradient differentiated, or the
    input gradient differentiated w.r.t. the grid): not provided. It raises a
    RuntimeError rather than returning a silent zero. The augmentation
    pipeline builds its grids from random numbers that never require
    gradients, so it never needs them.

The function name and signature are those of NVIDIA's StyleGAN2-ADA/3
`grid_sample_gradfix`, which network source embedded in their pickles calls.
"""

import torch

#----------------------------------------------------------------------------

# Use the custom autograd function (True) or plain torch grid_sample (False).
# NVIDIA's module defaults to False and has its training loop switch it on;
# here it is on unless switched off.
enabled = True

_MODE_BILINEAR = 0  # interpolation_mode of aten::grid_sampler_2d.
_PAD_ZEROS = 0      # padding_mode of aten::grid_sampler_2d.

#----------------------------------------------------------------------------

def grid_sample(input, grid): # pylint: disable=redefined-builtin
    """Bilinear sampling of `input` [N, C, H_in, W_in] at `grid` [N, H_out, W_out, 2]
    (x, y in [-1, 1], pixel corners at +-1, zeros outside), as
    torch.nn.functional.grid_sample with mode='bilinear', padding_mode='zeros',
    align_corners=False. Returns [N, C, H_out, W_out]."""
    if not enabled or not torch.is_grad_enabled() or not (input.requires_grad or grid.requires_grad):
        return _sample(input, grid)
    return _GridSample2d.apply(input, grid)

def _sample(input, grid): # pylint: disable=redefined-builtin
    return torch.nn.functional.grid_sample(input=input, grid=grid, mode='bilinear', padding_mode='zeros', align_corners=False)

#----------------------------------------------------------------------------

class _GridSample2d(torch.autograd.Function):
    """out = grid_sample(input, grid)."""

    @staticmethod
    def forward(ctx, input, grid): # pylint: disable=redefined-builtin, arguments-differ
        if input.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2:
            raise ValueError(f'grid_sample expects input [N, C, H, W] and grid [N, H_out, W_out, 2], '
                f'got {list(input.shape)} and {list(grid.shape)}')
        ctx.save_for_backward(input, grid)
        return _sample(input, grid)

    @staticmethod
    def backward(ctx, grad_output): # pylint: disable=arguments-differ
        input, grid = ctx.saved_tensors
        grad_input, grad_grid = _GridSample2dBackward.apply(grad_output, input, grid,
            ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return grad_input, grad_grid

#----------------------------------------------------------------------------

class _GridSample2dBackward(torch.autograd.Function):
    """(grad_input, grad_grid) = backward of grid_sample at (input, grid) for grad_output."""

    @staticmethod
    def forward(ctx, grad_output, input, grid, want_input, want_grid): # pylint: disable=redefined-builtin, arguments-differ
        grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(grad_output, input, grid,
            _MODE_BILINEAR, _PAD_ZEROS, False, [bool(want_input), bool(want_grid)])
        ctx.save_for_backward(grid)
        ctx.set_materialize_grads(False) # Unused outputs come back as None, not as zeros.
        # The kernel leaves the outputs it was not asked for undefined; autograd
        # functions must return tensors or None.
        return (grad_input if want_input else None), (grad_grid if want_grid else None)

    @staticmethod
    def backward(ctx, gg_input, gg_grid): # pylint: disable=arguments-differ
        grid, = ctx.saved_tensors
        needs_grad_output, _needs_input, needs_grid = ctx.needs_input_grad[:3]

        # grad_input depends on the grid, grad_grid on everything: not provided.
        if (gg_grid is not None and any(ctx.needs_input_grad[:3])) or (gg_input is not None and needs_grid):
            raise RuntimeError('grid_sample_gradfix: second-order derivatives involving the grid are not supported; '
                'only the input path (grad w.r.t. input, differentiated again w.r.t. input) is')

        # grad_input = S(grid)^T grad_output is linear in grad_output and does
        # not depend on input: its derivatives are S(grid) and zero.
        gg_output = None
        if needs_grad_output and gg_input is not None:
            gg_output = grid_sample(gg_input, grid)
        return gg_output, None, None, None, None

#----------------------------------------------------------------------------
