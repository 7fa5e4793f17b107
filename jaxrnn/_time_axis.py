"""The time axis of the parallel-in-time methods: whole on one device, or split across a mesh axis.

The associative scan and DEER touch the time axis in five ways only: an
associative scan over it, a shift by one step in either direction, a maximum
over it, and the value at its last step. :class:`TimeAxis` does each of
them. With ``name=None`` they are the single-device operations. With the name
of a ``shard_map`` axis, each device holds a contiguous chunk of the steps, in
the order of its index along that axis, and every operation communicates only
O(devices × state), never O(T):

* an associative scan scans each chunk, gathers the chunks' totals
  (``all_gather``: one element per device), and combines each step with the
  total of the chunks before it (the classic blocked parallel prefix);
* a shift sends one step's value to the neighbouring device (``ppermute``);
* a maximum gathers one value per device and sequence.

``flipped=True`` says the arrays hold time-reversed chunks (``reverse=True``:
each device flipped its own chunk), so the order of the devices in time is
reversed too; nothing moves between devices to reverse a sequence.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TimeAxis:
    """Where the leading (time) axis of the arrays lives.

    Attributes:
      name: the ``shard_map`` axis the time axis is split across, or None
        when each array holds the whole sequence.
      flipped: the chunks are time-reversed, and so is the order of the
        devices: the device of index ``n - 1`` holds the first steps.
    """

    name: str | None = None
    flipped: bool = False

    def shards(self) -> int:
        """How many chunks the sequence is split into (1 when it is not)."""
        return 1 if self.name is None else jax.lax.axis_size(self.name)

    def position(self) -> Array:
        """This device's chunk, counted in the (possibly flipped) order of time."""
        if self.name is None:
            return jnp.int32(0)
        index = jax.lax.axis_index(self.name)
        return self.shards() - 1 - index if self.flipped else index

    def first_step(self, num_local: int) -> Array:
        """The index in the whole (unflipped) sequence of this chunk's first step."""
        if self.name is None:
            return jnp.int32(0)
        return jax.lax.axis_index(self.name) * num_local

    def varying(self, tree: Any) -> Any:
        """``tree`` typed as varying across the devices (a ``shard_map`` loop carry must be)."""
        if self.name is None:
            return tree

        def cast(a: Array) -> Array:
            if self._varies(a):
                return a
            return jax.lax.pcast(a, self.name, to="varying")

        return jax.tree.map(cast, tree)

    def sum_cotangent(self, cotangent: Any, primal: Any) -> Any:
        """``cotangent`` of ``primal``, summed over the devices where ``primal`` is replicated.

        A value the same on every device is used by each device's chunk: its
        gradient is the sum of the chunks' (what a custom VJP must return for it).
        """
        if self.name is None:
            return cotangent

        def one(c: Array, p: Array) -> Array:
            if self._varies(c) and not self._varies(p):
                return jax.lax.psum(c, self.name)
            return c

        return jax.tree.map(one, cotangent, primal)

    def _varies(self, a: Array) -> bool:
        return self.name in jax.typeof(a).manual_axis_type.varying

    def scan(self, combine: Callable[[Any, Any], Any], elems: Any, *, reverse: bool = False) -> Any:
        """:func:`jax.lax.associative_scan` of ``elems`` along the whole time axis.

        ``combine(first, second)`` applies ``first`` and then ``second`` in the
        order of the scan (from the last step to the first with ``reverse``).
        """
        local = jax.lax.associative_scan(combine, elems, reverse=reverse)
        if self.name is None:
            return local
        n = self.shards()
        # Each chunk's total, in the order of the scan: position 0 is scanned first.
        total = jax.tree.map(lambda a: a[0] if reverse else a[-1], local)
        totals = jax.lax.all_gather(total, self.name)  # by device index
        if self.flipped != reverse:  # put them in the order of the scan
            totals = jax.tree.map(lambda a: jnp.flip(a, 0), totals)
        order = self.position()
        if reverse:
            order = n - 1 - order
        before = jax.lax.associative_scan(combine, totals)  # the totals of chunks 0..k
        prefix = jax.tree.map(lambda a: a[jnp.maximum(order - 1, 0)], before)
        prefix = jax.tree.map(lambda p, a: jnp.broadcast_to(p, a.shape), prefix, local)
        joined = combine(prefix, local)
        return jax.tree.map(lambda j, a: jnp.where(order == 0, a, j), joined, local)

    def previous(self, first: Array, states: Array) -> Array:
        """The state before every step, ``[first, s_0, …, s_{T-2}]`` over the whole sequence."""
        if self.name is None:
            return jnp.concatenate([first[None], states[:-1]])
        before = self._from_neighbour(states[-1], later=False)
        before = jnp.where(self.position() == 0, first, before)
        return jnp.concatenate([before[None], states[:-1]])

    def next(self, v: Array) -> Array:
        """``out[t] = v[t + 1]`` over the whole sequence, and 0 at its last step."""
        if self.name is None:
            after = jnp.zeros_like(v[:1])
        else:
            after = self._from_neighbour(v[0], later=True)[None]  # 0 on the last chunk
        return jnp.concatenate([v[1:], after])

    def last(self, tree: Any) -> Any:
        """The value at the last step of the whole sequence, on every device."""
        if self.name is None:
            return jax.tree.map(lambda a: a[-1], tree)
        is_last = self.position() == self.shards() - 1
        return jax.tree.map(
            lambda a: jax.lax.psum(jnp.where(is_last, a[-1], jnp.zeros_like(a[-1])), self.name),
            tree,
        )

    def max(self, value: Array) -> Array:
        """The largest of every chunk's ``value`` (NaN when any is NaN).

        (A ``pmax`` across CPU devices drops NaN, hence one gathered value per device.)
        """
        if self.name is None:
            return value
        return jnp.max(jax.lax.all_gather(value, self.name, to="invarying"), axis=0)

    def _from_neighbour(self, value: Array, *, later: bool) -> Array:
        """``value`` of the chunk just before this one in time (after it with ``later``).

        Zeros where there is none.
        """
        assert self.name is not None
        n = self.shards()
        to = 1 if later == self.flipped else -1  # receiver's index minus the sender's
        pairs = [(i, i + to) for i in range(n) if 0 <= i + to < n]
        return jax.lax.ppermute(value, self.name, pairs)


_COLLECTIVE = re.compile(
    r"= (.*?) (all-gather|collective-permute|all-reduce|all-to-all|reduce-scatter)(?:-start)?\("
)


def collectives(compiled_text: str) -> list[tuple[str, int]]:
    """``(operation, bytes of its result)`` for every collective of a compiled XLA program.

    ``compiled_text`` is ``jax.jit(f).lower(...).compile().as_text()``; the
    list is sorted. The operations are counted as written in the program
    (one inside a loop body counts once), which is what tells whether the
    communication of a sharded scan grows with the number of steps.
    """
    found = []
    for line in compiled_text.splitlines():
        match = _COLLECTIVE.search(line)
        if match is None:
            continue
        size = 0
        for dtype, dims in re.findall(r"([a-z]+\d+)\[([\d,]*)\]", match.group(1)):
            count = 1
            for d in filter(None, dims.split(",")):
                count *= int(d)
            size += count * int(re.sub(r"\D", "", dtype)) // 8
        found.append((match.group(2), size))
    return sorted(found)
