"""Third-order tensor algebra (Kilmer & Martin's t-product) through the FFT.

A tensor of shape (n, m, k) is a stack of k frontal slices X[:, :, a]. The t-product
circularly convolves slices: (X * Y)[:, :, r] = sum_a X[:, :, a] @ Y[:, :, (r - a) mod k].
Along the third axis the DFT turns that convolution into k independent matrix products,
so every operation below is: FFT along the last axis, one batched matrix operation over
the Fourier slices, inverse FFT. Real tensors need only the k // 2 + 1 slices of the real
FFT (the others are their complex conjugates), and of those the first (and, for even k, the
last) are real matrices, whose pseudo-inverses take real arithmetic. Every function also
takes leading batch dimensions: (..., n, m, k).
"""

from __future__ import annotations

import torch


def _fourier_slices(x: torch.Tensor) -> torch.Tensor:
    """(..., n, m, k) real -> (..., k // 2 + 1, n, m) complex: the real FFT's slices first."""
    return torch.fft.rfft(x, dim=-1).movedim(-1, -3)


def _from_fourier_slices(x_hat: torch.Tensor, k: int) -> torch.Tensor:
    return torch.fft.irfft(x_hat.movedim(-3, -1), n=k, dim=-1)


def _depth(x: torch.Tensor, y: torch.Tensor) -> int:
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"t-product needs equal third dimensions, got {x.shape[-1]} and {y.shape[-1]}")
    return x.shape[-1]


def t_product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """X * Y for X (..., n, m, k) and Y (..., m, p, k): (..., n, p, k)."""
    k = _depth(x, y)
    return _from_fourier_slices(_fourier_slices(x) @ _fourier_slices(y), k)


def t_product_circular(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The t-product by its definition, the circular convolution of frontal slices (k^2
    matrix products): the reference the FFT form is tested against."""
    k = _depth(x, y)
    slices = [torch.stack([x[..., a] @ y[..., (r - a) % k] for a in range(k)]).sum(dim=0)
              for r in range(k)]
    return torch.stack(slices, dim=-1)


def t_transpose(x: torch.Tensor) -> torch.Tensor:
    """X^T: every frontal slice transposed and slices 1..k-1 in reverse order, so that
    <X * T, G> = <X, G * T^T> (the adjoint of right-multiplication by T)."""
    transposed = x.transpose(-3, -2)
    return torch.cat([transposed[..., :1], transposed[..., 1:].flip(-1)], dim=-1)


def slice_transpose(x: torch.Tensor) -> torch.Tensor:
    """Every frontal slice transposed, slice order kept: what the released FUSE code uses
    as the transpose (equal to `t_transpose` for k <= 2, not an adjoint for k >= 3)."""
    return x.transpose(-3, -2)


def t_identity(n: int, k: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
    """The identity of the t-product: slice 0 is the n x n identity, the others zero."""
    identity = torch.zeros(n, n, k, dtype=dtype, device=device)
    identity[..., 0] = torch.eye(n, dtype=dtype, device=device)
    return identity


def _slice_pinv(x_hat: torch.Tensor, k: int) -> torch.Tensor:
    """Pseudo-inverses of the real FFT's slices (..., k // 2 + 1, n, m) of a real tensor of
    depth k: the zero-frequency slice (and the Nyquist slice for even k) in real arithmetic,
    the complex ones batched."""
    real = [0] + ([k // 2] if k % 2 == 0 and k > 1 else [])
    complex_ = [f for f in range(x_hat.shape[-3]) if f not in real]
    inverse = x_hat.new_empty(*x_hat.shape[:-2], x_hat.shape[-1], x_hat.shape[-2])
    inverse[..., real, :, :] = torch.linalg.pinv(x_hat[..., real, :, :].real).to(x_hat.dtype)
    if complex_:
        inverse[..., complex_, :, :] = torch.linalg.pinv(x_hat[..., complex_, :, :])
    return inverse


def t_pinv(x: torch.Tensor) -> torch.Tensor:
    """The t-pseudo-inverse X^+ (..., m, n, k): each Fourier slice's Moore-Penrose inverse."""
    k = x.shape[-1]
    return _from_fourier_slices(_slice_pinv(_fourier_slices(x), k), k)


def t_least_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """X^+ * Y, the minimum-norm least-squares solution T of X * T = Y, in one pass over
    the Fourier slices (no separate inverse transform of X^+)."""
    k = _depth(x, y)
    return _from_fourier_slices(_slice_pinv(_fourier_slices(x), k) @ _fourier_slices(y), k)
