"""Parity with the released FUSE tensor algebra (jnwilliams/FUSE_prompt_inversion).

Set HARNESS_PARITY_FUSE to an untracked checkout of that repository; its `tensor_utils`
package is imported from there (it needs numpy and scipy). Without the variable the
tests skip.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest
import torch

from harness.fuse._bridge import released_t_product
from harness.fuse._tensor import t_pinv, t_product

CHECKOUT = os.environ.get("HARNESS_PARITY_FUSE")
pytestmark = pytest.mark.skipif(not CHECKOUT, reason="set HARNESS_PARITY_FUSE to a checkout of "
                                                     "jnwilliams/FUSE_prompt_inversion")


@pytest.fixture(scope="module")
def official():
    root = Path(CHECKOUT).expanduser()
    if not (root / "tensor_utils" / "tensor_product.py").is_file():
        pytest.fail(f"HARNESS_PARITY_FUSE={root} has no tensor_utils/tensor_product.py")
    sys.path.insert(0, str(root))
    try:
        yield (importlib.import_module("tensor_utils.tensor_product"),
               importlib.import_module("tensor_utils.tensor_inverse"))
    finally:
        sys.path.remove(str(root))


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_t_product_matches(official, k: int) -> None:
    product, _ = official
    x, y = randn(16, 12, k, seed=k), randn(12, 8, k, seed=10 + k)
    ours, theirs = t_product(x, y), product.t_prod(x, y)
    print(f"t_prod k={k}: max |diff| = {(ours - theirs).abs().max():.2e}")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape", [(16, 12, 1), (16, 12, 2), (16, 12, 3), (16, 12, 4), (8, 12, 3)])
def test_t_pinv_matches(official, shape: tuple[int, int, int]) -> None:
    _, inverse = official
    x = randn(*shape, seed=sum(shape))
    ours, theirs = t_pinv(x), inverse.pinv(x)
    print(f"pinv {shape}: max |diff| = {(ours - theirs).abs().max():.2e}")
    torch.testing.assert_close(ours, theirs.float(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("depths", [(1, 3), (2, 4), (3, 3)])
def test_released_product_of_unequal_depths_matches(official, depths: tuple[int, int]) -> None:
    """The backward of `adjoint=official` multiplies a word's first rows (fewer than the
    map's slices when the text is short) as the released `t_prod_fast` does."""
    product, _ = official
    x, y = randn(1, 6, depths[0], seed=1), randn(6, 5, depths[1], seed=2)
    torch.testing.assert_close(released_t_product(x, y), product.t_prod(x, y), rtol=0, atol=1e-4)
