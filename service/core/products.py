"""`accumulate(z, x, w)`: z[s, j] += x[s, i] * w[i, j] for i = 0, 1, 2, ... in that order;
`sum_from(z, start, x, w)`: the same sums started from start[j] instead of z[s, j].

Every z[s, j] takes its terms one at a time, in input order, each a `fmul` then an `fadd`
(two roundings: no fast-math flag anywhere, so LLVM never fuses or reorders them).

The product is written in LLVM IR (`_accumulate_blocked`) so that a block of partial sums
stays in vector registers across the whole sum over the inputs: compiled from numba loops,
z[j] went through memory every few inputs, since LLVM must assume z and w may alias. One
row (a long chunk of one session) holds as many vectors as half the target's registers
(`_register_budget`); several rows (micro-batches, the input terms of many timesteps) go
in groups of rows that share each load of w. Lanes never interact, so the vector width a
CPU gets (<16 x float> is one AVX-512 register, two AVX ones, four SSE ones) and the block
sizes change no bit; the outputs past the last full vector are one vector whose other
lanes are masked (never read or written). Arrays whose last axis is not contiguous take
plain numba loops (`_accumulate_rows`), the same operations in the same order.
"""

from typing import Any

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_LANES = 16  # floats per vector
_F32 = ir.FloatType()
_VECTOR = ir.VectorType(_F32, _LANES)
_I32 = ir.IntType(32)
_SPLAT = ir.Constant(ir.VectorType(_I32, _LANES), [0] * _LANES)


def _register_budget(context: Any) -> int:
    """Vectors of partial sums held at once: half the target's vector registers (32 AVX-512
    registers hold 16 vectors of 16 floats; 16 AVX ones hold 4 as 8 halves)."""
    codegen = context.codegen()
    features = getattr(codegen, "_tm_features", "")
    if "+avx512f" in features:
        return 16
    if "+avx" in features or codegen._get_host_cpu_name() not in ("generic", "x86-64"):
        return 4
    return 2


def _at(builder, base, offset_bytes, pointee):
    return builder.bitcast(cgutils.pointer_add(builder, base, offset_bytes), pointee.as_pointer())


class _Codegen:
    """The loops of one `_accumulate_blocked` call, over the rows' base pointers."""

    def __init__(self, context, builder, signature, args, start=None):
        self.builder = builder
        self.intp = context.get_value_type(types.intp)
        za, xa, wa = (
            context.make_array(t)(context, builder, value=v)
            for t, v in zip(signature.args, args, strict=True)
        )
        self.z, self.x, self.w = za.data, xa.data, wa.data
        self.start = start  # the first terms' base pointer (one vector for every row), or z
        self.rows, self.n = cgutils.unpack_tuple(builder, za.shape, 2)
        self.inputs = cgutils.unpack_tuple(builder, xa.shape, 2)[1]
        self.z_row = cgutils.unpack_tuple(builder, za.strides, 2)[0]
        self.x_row = cgutils.unpack_tuple(builder, xa.strides, 2)[0]
        self.w_row = cgutils.unpack_tuple(builder, wa.strides, 2)[0]
        budget = _register_budget(context)
        self.group = 4 if budget >= 16 else 2 if budget >= 4 else 1
        self.single_width = budget
        self.group_width = max(1, budget // self.group)
        self.sums = [cgutils.alloca_once(builder, _VECTOR) for _ in range(budget)]
        mask = ir.VectorType(ir.IntType(1), _LANES)
        module = builder.module
        self.masked_load = cgutils.get_or_insert_function(
            module,
            ir.FunctionType(_VECTOR, [_VECTOR.as_pointer(), _I32, mask, _VECTOR]),
            f"llvm.masked.load.v{_LANES}f32.p0",
        )
        self.masked_store = cgutils.get_or_insert_function(
            module,
            ir.FunctionType(ir.VoidType(), [_VECTOR, _VECTOR.as_pointer(), _I32, mask]),
            f"llvm.masked.store.v{_LANES}f32.p0",
        )

    def bytes(self, count):
        return self.builder.mul(count, self.intp(4))

    def load(self, base, offset, mask):
        address = _at(self.builder, base, offset, _VECTOR)
        if mask is None:
            return self.builder.load(address, align=4)
        zeros = ir.Constant(_VECTOR, [0.0] * _LANES)
        return self.builder.call(self.masked_load, [address, _I32(4), mask, zeros])

    def store(self, value, base, offset, mask):
        address = _at(self.builder, base, offset, _VECTOR)
        if mask is None:
            self.builder.store(value, address, align=4)
        else:
            self.builder.call(self.masked_store, [value, address, _I32(4), mask])

    def vectors(self, z_rows, x_rows, first, width, mask=None):
        """Outputs [first, first + width * _LANES) of the rows, their sums in registers;
        with a mask (one vector), only its lanes are read and written."""
        b, intp = self.builder, self.intp
        offsets = [self.bytes(b.add(first, intp(_LANES * k))) for k in range(width)]
        sums = [[self.sums[r * width + k] for k in range(width)] for r in range(len(z_rows))]
        for z_r, row_sums in zip(z_rows, sums, strict=True):
            first_terms = z_r if self.start is None else self.start
            for offset, total in zip(offsets, row_sums, strict=True):
                b.store(self.load(first_terms, offset, mask), total)
        with cgutils.for_range(b, self.inputs, intp=intp) as loop:
            w_i = cgutils.pointer_add(b, self.w, b.mul(loop.index, self.w_row))
            ws = [self.load(w_i, offset, mask) for offset in offsets]
            for x_r, row_sums in zip(x_rows, sums, strict=True):
                one = b.load(_at(b, x_r, self.bytes(loop.index), _F32))
                xi = b.shuffle_vector(
                    b.insert_element(ir.Constant(_VECTOR, ir.Undefined), one, _I32(0)),
                    ir.Constant(_VECTOR, ir.Undefined),
                    _SPLAT,
                )
                for wv, total in zip(ws, row_sums, strict=True):
                    b.store(b.fadd(b.load(total), b.fmul(xi, wv)), total)
        for z_r, row_sums in zip(z_rows, sums, strict=True):
            for offset, total in zip(offsets, row_sums, strict=True):
                self.store(b.load(total), z_r, offset, mask)

    def rows_block(self, z_rows, x_rows, width):
        """Every output of these rows: blocks of `width` vectors, then the vectors left in
        blocks of width/2, width/4, ..., 1 as they fit, then one masked vector."""
        b, intp = self.builder, self.intp
        full = b.udiv(self.n, intp(_LANES * width))
        with cgutils.for_range(b, full, intp=intp) as loop:
            self.vectors(z_rows, x_rows, b.mul(loop.index, intp(_LANES * width)), width)
        done = b.mul(full, intp(_LANES * width))
        left = b.udiv(b.sub(self.n, done), intp(_LANES))
        part = width // 2
        while part >= 1:
            taken = b.and_(left, intp(part))
            with b.if_then(b.icmp_unsigned("!=", taken, intp(0))):
                self.vectors(z_rows, x_rows, done, part)
            done = b.add(done, b.mul(taken, intp(_LANES)))
            part //= 2
        # The last outputs (fewer than a vector): one vector whose other lanes are masked.
        tail = b.sub(self.n, done)
        with b.if_then(b.icmp_unsigned("!=", tail, intp(0))):
            lanes = ir.Constant(ir.VectorType(_I32, _LANES), list(range(_LANES)))
            count = b.trunc(tail, _I32)
            counts = b.shuffle_vector(
                b.insert_element(
                    ir.Constant(ir.VectorType(_I32, _LANES), ir.Undefined), count, _I32(0)
                ),
                ir.Constant(ir.VectorType(_I32, _LANES), ir.Undefined),
                _SPLAT,
            )
            self.vectors(z_rows, x_rows, done, 1, b.icmp_unsigned("<", lanes, counts))

    def row_bases(self, first_row, count):
        b = self.builder
        rows = [b.add(first_row, self.intp(r)) for r in range(count)]
        z_rows = [cgutils.pointer_add(b, self.z, b.mul(r, self.z_row)) for r in rows]
        x_rows = [cgutils.pointer_add(b, self.x, b.mul(r, self.x_row)) for r in rows]
        return z_rows, x_rows

    def emit(self):
        b, intp = self.builder, self.intp
        groups = b.udiv(self.rows, intp(self.group))
        with cgutils.for_range(b, groups, intp=intp) as loop:
            first = b.mul(loop.index, intp(self.group))
            z_rows, x_rows = self.row_bases(first, self.group)
            self.rows_block(z_rows, x_rows, self.group_width)
        grouped = b.mul(groups, intp(self.group))
        with cgutils.for_range(b, self.rows, start=grouped, intp=intp) as loop:
            z_rows, x_rows = self.row_bases(loop.index, 1)
            self.rows_block(z_rows, x_rows, self.single_width)


@intrinsic
def _accumulate_blocked(typingctx, z, x, w):
    """The product with the sums in registers; every array's last axis contiguous."""
    for a in (z, x, w):
        if not (isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.float32):
            return None

    def codegen(context, builder, signature, args):
        _Codegen(context, builder, signature, args).emit()
        return context.get_dummy_value()

    return types.void(z, x, w), codegen


@intrinsic
def _sum_from_blocked(typingctx, z, start, x, w):
    """z[s] = start + x[s] @ w, the sums in registers from their first terms (start, read
    once for every row) to z, which is only written; every array's last axis contiguous."""
    for a in (z, x, w):
        if not (isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.float32):
            return None
    if not (isinstance(start, types.Array) and start.ndim == 1 and start.dtype == types.float32):
        return None

    def codegen(context, builder, signature, args):
        z_, start_, x_, w_ = args
        first = context.make_array(signature.args[1])(context, builder, value=start_).data
        inner = types.void(signature.args[0], signature.args[2], signature.args[3])
        _Codegen(context, builder, inner, (z_, x_, w_), first).emit()
        return context.get_dummy_value()

    return types.void(z, start, x, w), codegen


@njit(error_model="numpy")
def _accumulate_rows(z, x, w):
    """Four inputs per pass over z, each still added alone and in order (a quarter of the
    loads and stores of z); the rows inside, so w's four rows stay in L1 for all of them."""
    rows, n = z.shape
    i = 0
    while i + 4 <= x.shape[1]:
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        for s in range(rows):
            zs = z[s]
            x0, x1, x2, x3 = x[s, i], x[s, i + 1], x[s, i + 2], x[s, i + 3]
            for j in range(n):
                zs[j] = (((zs[j] + x0 * w0[j]) + x1 * w1[j]) + x2 * w2[j]) + x3 * w3[j]
        i += 4
    while i < x.shape[1]:
        wi = w[i]
        for s in range(rows):
            zs = z[s]
            xi = x[s, i]
            for j in range(n):
                zs[j] += xi * wi[j]
        i += 1


@njit(error_model="numpy")
def _rows_contiguous(a):
    return a.size <= 1 or a.shape[1] <= 1 or a.strides[1] == 4


@njit(error_model="numpy")
def accumulate(z, x, w):
    """z[s, j] += x[s, i] * w[i, j] for every row s, i = 0, 1, 2, ... in that order.

    z: (rows, n), x: (rows, inputs), w: (inputs, n), float32, each with its last axis
    contiguous (as every array the kernels build or receive is)."""
    if x.shape[0] != z.shape[0] or w.shape[0] != x.shape[1] or w.shape[1] != z.shape[1]:
        raise ValueError("accumulate: shapes do not match")
    if _rows_contiguous(z) and _rows_contiguous(x) and _rows_contiguous(w):
        _accumulate_blocked(z, x, w)
    else:
        _accumulate_rows(z, x, w)


@njit(error_model="numpy")
def sum_from(z, start, x, w):
    """z[s, j] = start[j] + x[s, 0] * w[0, j] + x[s, 1] * w[1, j] + ..., in that order: the
    same bits as filling each row of z with `start`, then `accumulate(z, x, w)`, without
    writing and reading z twice. start: (n,)."""
    if (
        x.shape[0] != z.shape[0]
        or w.shape[0] != x.shape[1]
        or w.shape[1] != z.shape[1]
        or start.shape[0] != z.shape[1]
    ):
        raise ValueError("sum_from: shapes do not match")
    if (
        _rows_contiguous(z)
        and _rows_contiguous(x)
        and _rows_contiguous(w)
        and (start.size <= 1 or start.strides[0] == 4)
    ):
        _sum_from_blocked(z, start, x, w)
    else:
        for s in range(z.shape[0]):
            z[s] = start
        _accumulate_rows(z, x, w)
