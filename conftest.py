"""Strict defaults for every test and doctest.

* float64 is available (``jax_enable_x64``), so every test names its dtypes;
* implicit rank promotion raises, as in equinox's test suite;
* XLA's optimisation passes are off (``jax_disable_most_optimizations``): it
  halves the suite's compile-bound run time on 2 cores and leaves the numbers
  the tests compare unchanged up to rounding. Speed is measured by the
  benchmarks, at full optimisation, never here.
"""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_disable_most_optimizations", True)
