"""A realistic synthetic shop: customers who buy, drop out, open emails and browse, written
in the canonical import format, with the ground truth of how each customer responds to a
contact. See docs/generator.md.

>>> from winback.generator import generate_shop
>>> shop = generate_shop(Path("shop"), customers=20_000, months=24, seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

from winback.generator.model import DEFAULT_END, ShopModel
from winback.generator.shop import (
    GeneratedShop,
    InvalidGeneratorParameters,
    OrdersArrays,
    Progress,
    generate_orders_arrays,
    generate_shop,
)

__all__ = [
    "DEFAULT_END",
    "GeneratedShop",
    "InvalidGeneratorParameters",
    "OrdersArrays",
    "Progress",
    "ShopModel",
    "generate_orders_arrays",
    "generate_shop",
]
