"""The t-product algebra and the adapter fit: exact properties, float64."""

from __future__ import annotations

import pytest
import torch

from harness.fuse._adapter import AdapterConfig, fit_adapter, word_tensor
from harness.fuse._tensor import (slice_transpose, t_identity, t_least_squares, t_pinv, t_product,
                                  t_product_circular, t_transpose)

DEPTHS = [1, 2, 3, 4, 5]


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def inner(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x * y).sum())


@pytest.mark.parametrize("k", DEPTHS)
def test_fft_form_equals_circular_convolution(k: int) -> None:
    x, y = randn(5, 3, k, seed=1), randn(3, 4, k, seed=2)
    torch.testing.assert_close(t_product(x, y), t_product_circular(x, y), rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", DEPTHS)
def test_associativity_and_identity(k: int) -> None:
    x, y, z = randn(4, 3, k, seed=1), randn(3, 5, k, seed=2), randn(5, 2, k, seed=3)
    torch.testing.assert_close(t_product(t_product(x, y), z), t_product(x, t_product(y, z)),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(t_product(t_identity(4, k, torch.float64), x), x, rtol=0, atol=1e-14)
    torch.testing.assert_close(t_product(x, t_identity(3, k, torch.float64)), x, rtol=0, atol=1e-14)


def test_batched_over_leading_dimensions() -> None:
    x, y = randn(2, 6, 4, 3, 3, seed=1), randn(2, 6, 3, 5, 3, seed=2)
    torch.testing.assert_close(t_product(x, y)[1, 4], t_product(x[1, 4], y[1, 4]), rtol=0, atol=1e-12)
    torch.testing.assert_close(t_pinv(y)[0, 2], t_pinv(y[0, 2]), rtol=0, atol=1e-12)


def test_unequal_depths_are_refused() -> None:
    with pytest.raises(ValueError, match="equal third dimensions"):
        t_product(randn(2, 2, 3), randn(2, 2, 4))


@pytest.mark.parametrize("shape", [(6, 3, 1), (6, 3, 4), (3, 6, 3), (5, 5, 2)])
def test_pseudo_inverse_identities(shape: tuple[int, int, int]) -> None:
    x = randn(*shape, seed=4)
    pinv = t_pinv(x)
    torch.testing.assert_close(t_product(t_product(x, pinv), x), x, rtol=0, atol=1e-10)
    torch.testing.assert_close(t_product(t_product(pinv, x), pinv), pinv, rtol=0, atol=1e-10)
    torch.testing.assert_close(t_pinv(pinv), x, rtol=0, atol=1e-10)
    if shape[0] >= shape[1]:  # full column rank in every Fourier slice: a left inverse
        torch.testing.assert_close(t_product(pinv, x), t_identity(shape[1], shape[2], torch.float64),
                                   rtol=0, atol=1e-10)


def test_least_squares_is_pinv_times_target() -> None:
    x, y = randn(9, 4, 3, seed=5), randn(9, 2, 3, seed=6)
    torch.testing.assert_close(t_least_squares(x, y), t_product(t_pinv(x), y), rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", DEPTHS)
def test_adjoint_identity_holds_with_the_t_transpose(k: int) -> None:
    """<X * T, G> = <X, G * T^T>: the backward of x_B = x_A * T is G_B * T^T."""
    x, t, g = randn(7, 4, k, seed=1), randn(4, 3, k, seed=2), randn(7, 3, k, seed=3)
    assert inner(t_product(x, t), g) == pytest.approx(inner(x, t_product(g, t_transpose(t))),
                                                      rel=1e-12)
    released = inner(x, t_product(g, slice_transpose(t)))
    if k <= 2:  # slice order reversal is void for one or two slices
        assert inner(t_product(x, t), g) == pytest.approx(released, rel=1e-12)
    else:
        assert inner(t_product(x, t), g) != pytest.approx(released, rel=1e-3)


def test_k1_is_the_ordinary_least_squares_map() -> None:
    table_a, table_b = randn(40, 6, seed=7), randn(50, 5, seed=8)
    ids_a = [[i] for i in range(30)]
    ids_b = [[i + 3] for i in range(30)]
    adapter = fit_adapter(table_a, table_b, ids_a, ids_b, AdapterConfig(max_subtokens=1))
    expected = torch.linalg.pinv(table_a[:30].float()) @ table_b[3:33].float()
    torch.testing.assert_close(adapter.maps[0][..., 0], expected, rtol=1e-4, atol=1e-5)
    assert adapter.words == (30,)


def test_words_are_grouped_by_the_secondary_token_count() -> None:
    table_a, table_b = randn(20, 4, seed=1), randn(20, 3, seed=2)
    ids_a = [[1], [2, 3], [4, 5, 6], [7]]
    ids_b = [[1, 2], [3], [4, 5], [6, 7, 8]]
    adapter = fit_adapter(table_a, table_b, ids_a, ids_b, AdapterConfig(max_subtokens=4))
    assert adapter.words == (1, 2, 1, 0)
    assert not adapter.maps[3].any()  # no word of four B tokens: no map, no gradient
    # A's side is cut or zero-padded to the B count: [4, 5, 6] -> [4, 5]; [1] -> [1, pad]
    tube = word_tensor(table_a, [[4, 5, 6], [1]], 2)
    torch.testing.assert_close(tube[0], table_a[[4, 5]].T)
    torch.testing.assert_close(tube[1, :, 1], torch.zeros(4, dtype=torch.float64))


def test_held_out_r2_is_one_for_a_linear_relation_and_low_for_unrelated_tables() -> None:
    """R^2 on the words the fit did not see: an exact linear map is recovered from the first
    80% of the words; an unrelated table is not predicted at all."""
    table_a, mixing = randn(100, 6, seed=1), randn(6, 4, seed=2)
    ids = [[i] for i in range(100)]
    related = fit_adapter(table_a, table_a @ mixing, ids, ids, AdapterConfig(max_subtokens=1))
    assert related.held_out[0].words == 20
    assert related.held_out_r2() == pytest.approx(1.0, abs=1e-6)
    unrelated = fit_adapter(table_a, randn(100, 4, seed=3), ids, ids, AdapterConfig(max_subtokens=1))
    assert unrelated.held_out_r2() < 0.3
    few = fit_adapter(table_a, table_a @ mixing, ids[:4], ids[:4], AdapterConfig(max_subtokens=1))
    assert few.held_out_r2() is None  # under five words: none held out
