"""Held-out specs II, written from docs/language.md alone (Scan, State, Halting, Convolution and
pooling, Batch statistics, Errors): unusual but legal combinations must check, load, run forward
and backward at every listed size (the smallest the declarations allow included), on every scan
backend that admits them (equal to the sequential loop), and emit Python that gives the same
outputs; the mistakes must be refused at check, located, with a hint.

The runner is tests/test_docs_specs.py's (`run_ok`); the references for the regressions below
are torch's own functions and the recurrences written out as loops.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ncd
from ncd.scan_backends import NAMES
from test_docs_specs import _inputs, _size_sets, run_ok

OK = {}
ERR = {}

OK["tuple_carry_shapes"] = ("""axis T, D = 3, K = 2, V = 4
block F(x: [T, D]) -> [T, D], [T, V] {
    param w: [D, K] init normal(0, 0.5)
    param u: [D, V] init normal(0, 0.5)
    ys, zs = scan t over T carry (h: [D] = 0, S: [K, V] = 0, c: [] = 1) {
        h = tanh(x[t] + 0.5 * h)
        S = 0.9 * S + (h @[D] w) * (h @[D] u)
        c = c * 0.5
        emit h * c, sum(S, over = K)
    }
    return ys, zs
}""", "T=1|T=3|T=5")

OK["scan_over_conv"] = ("""axis C = 2, D = 3, K = 3, T, T2
block F(x: [C, T]) -> [T2, D] {
    param w: [D, C, K] init normal(0, 0.5)
    u = conv(x, w, over = T -> T2, kernel = [K])
    return scan t over T2 carry (h: [D] = 0) {
        h = tanh(u[t] + 0.5 * h)
        emit h
    }
}""", "T=3|T=6")

OK["conv_out_one_strided"] = ("""axis C = 2, D = 3, K = 3, Y = 5, Y2
block F(x: [C, Y]) -> [D, Y2] {
    param w: [D, C, K] init normal(0, 0.5)
    return conv(x, w, over = Y -> Y2, kernel = [K], stride = 3, dilation = 2)
}""", "")

OK["conv_out_one_groups"] = ("""axis G = 2, Cg = 2, Dg = 3, K = 2, Y = 3, Y2, C, D
block F(x: [C, Y]) -> [D, Y2] {
    param W: [G, Dg, Cg, K] init normal(0, 0.3)
    h = conv(x[C -> G Cg], W, over = Y -> Y2, kernel = [K], groups = [G], stride = 2, dilation = 2)
    return h[G Dg -> D]
}""", "")

OK["conv_out_one_free"] = ("""axis C = 2, D = 2, K = 3, Y, Y2
block F(x: [C, Y]) -> [D, Y2] {
    param w: [D, C, K] init normal(0, 0.5)
    return conv(x, w, over = Y -> Y2, kernel = [K], dilation = 2)
}""", "Y=5|Y=6|Y=9")

OK["conv2d_out_one"] = ("""axis C = 2, D = 3, KY = 3, KX = 2, Y, X, Y2, X2
block F(x: [C, Y, X]) -> [D, Y2, X2] {
    param w: [D, C, KY, KX] init normal(0, 0.5)
    return conv(x, w, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], stride = [2, 3], padding = [1, 0])
}""", "Y=1,X=2|Y=3,X=4|Y=4,X=7")

OK["maxpool_ceil_odd"] = ("""axis C = 2, Y, X, Yp, Xp
block F(x: [C, Y, X]) -> [C, Yp, Xp] {
    return maxpool(x, over = [Y, X] -> [Yp, Xp], size = [2, 3], stride = 2, ceil_mode = true)
}""", "Y=3,X=3|Y=5,X=7|Y=2,X=4")

OK["avgpool_ceil_pad"] = ("""axis C = 2, T, Tp
block F(x: [C, T]) -> [C, Tp] {
    return avgpool(x, over = T -> Tp, size = 3, stride = 2, padding = 1, ceil_mode = true)
}""", "T=2|T=5|T=6")

OK["maxpool_dilation_ceil"] = ("""axis C = 2, T, Tp
block F(x: [C, T]) -> [C, Tp] {
    return maxpool(x, over = T -> Tp, size = 2, stride = 2, dilation = 2, ceil_mode = true)
}""", "T=3|T=4|T=7")

OK["pool_out_one"] = ("""axis C = 3, T = 3, Tp
block F(x: [C, T]) -> [C, Tp] {
    return avgpool(x, over = T -> Tp, size = 3)
}""", "")

OK["bn_in_scan"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D] {
    buffer rm: [D] init zeros
    buffer rv: [D] init ones
    return scan t over T carry (h: [D] = 0) {
        h = tanh(batchnorm(x[t], rm, rv) + 0.5 * h)
        emit h
    }
}""", "T=1|T=4")

OK["bn_in_called_block"] = ("""axis C = 3, L
block BN(x: [C, L]) -> [C, L] {
    param weight: [C] init ones
    param bias: [C] init zeros
    buffer running_mean: [C] init zeros
    buffer running_var: [C] init ones
    buffer num_batches_tracked: [] init zeros
    return batchnorm(x, running_mean, running_var, num_batches_tracked, over = L) * weight + bias
}
block F(x: [C, L]) -> [C, L] {
    use a = BN, b = BN
    return b(relu(a(x)))
}""", "L=1|L=5")

OK["bn_in_scan_block"] = ("""axis T, D = 3
block BN(x: [D]) -> [D] {
    buffer running_mean: [D] init zeros
    buffer running_var: [D] init ones
    return batchnorm(x, running_mean, running_var, momentum = 0.3)
}
block F(x: [T, D]) -> [T, D] {
    use bn = BN
    return scan t over T carry (h: [D] = 0) {
        h = bn(x[t] + h) * 0.5
        emit h
    }
}""", "T=2|T=3")

OK["bn_after_conv"] = ("""axis C = 2, D = 3, K = 3, Y, Y2
block F(x: [C, Y]) -> [D, Y2] {
    param w: [D, C, K] init normal(0, 0.5)
    buffer rm: [D] init zeros
    buffer rv: [D] init ones
    h = conv(x, w, over = Y -> Y2, kernel = [K], padding = 1, stride = 2)
    return relu(batchnorm(h, rm, rv, over = Y2))
}""", "Y=1|Y=4|Y=7")

OK["halting_in_lifted_call"] = ("""axis T, H = 2, D = 3
block Ponder(x: [D]) -> [D], [] {
    param w: [D] init normal(0, 0.3)
    param W: [D, D'] init normal(0, 0.3)
    y, p = halting n max 4 mix graves carry (s: [D] = x) {
        s = tanh(s @[D] W)[D' as D] + x
        halt sigmoid(s @[D] w)
    }
    return y, p
}
block F(x: [T, H, D]) -> [T, H, D], [T, H] {
    use pd = Ponder
    return pd(x)
}""", "T=1|T=3")

OK["halting_interp_two_carries"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D], [T, D], [T] {
    param w: [D] init normal(0, 0.3)
    a, b, p = halting n max 3 eps 0.1 mix interpolate carry (s: [T, D] = x, r: [T, D] = 0 * x) {
        s = tanh(s + r)
        r = r + 0.1 * s
        halt sigmoid(s @[D] w + 0.1 * n)
    }
    return a, b, p
}""", "T=1|T=4")

OK["halting_in_scan_step"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D] {
    param w: [D] init normal(0, 0.3)
    return scan t over T carry (h: [D] = 0) {
        y, p = halting n max 3 mix graves carry (s: [D] = x[t] + h) {
            s = tanh(s)
            halt sigmoid(s @[D] w)
        }
        h = y * 0.5
        emit h + 0.0 * p
    }
}""", "T=1|T=3")

OK["halting_max1"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    param w: [D] init normal(0, 0.3)
    y, p = halting n max 1 mix graves carry (s: [T, D] = x) {
        s = s * 2
        halt sigmoid(s @[D] w)
    }
    return y + p
}""", "T=1|T=2")

OK["carry_from_param"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D] {
    param h0: [D] init normal(0, 1)
    return scan t over T carry (h: [D] = h0) {
        h = tanh(x[t] + 0.5 * h)
        emit h
    }
}""", "T=1|T=3")

OK["carry_from_input"] = ("""axis T, D = 3
block F(x: [T, D], h0: [D]) -> [T, D] {
    return scan t over T carry (h: [D] = h0) {
        h = 0.9 * h + x[t]
        emit h
    }
}""", "T=1|T=4")

OK["carry_from_first_pos"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D] {
    param a: [D] init uniform(0, 1)
    return scan t over T carry (h: [D] = x[T = 0]) {
        h = a * h + x[t]
        emit h
    }
}""", "T=1|T=3")

OK["carry_matrix_param_init"] = ("""axis T, K = 2, V = 3
block F(q: [T, K], k: [T, K], v: [T, V], g: [T, K]) -> [T, V] {
    param S0: [K, V] init normal(0, 0.1)
    return scan t over T carry (S: [K, V] = S0) {
        S = exp(-softplus(g[t])) * S + k[t] * v[t]
        emit q[t] @[K] S
    }
}""", "T=1|T=4")

OK["diag_linear_reverse"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D] {
    param a: [D] init uniform(0.1, 0.9)
    return scan t over T reverse carry (h: [D] = 0) {
        h = a * h + x[t]
        emit h
    }
}""", "T=1|T=2|T=5")

OK["lti_dense"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D] {
    param A: [D', D] init normal(0, 0.3)
    return scan t over T carry (h: [D] = 0) {
        h = h[D as D'] @[D'] A + x[t]
        emit h
    }
}""", "T=1|T=4")

OK["lti_reverse_init"] = ("""axis T, D = 2
block F(x: [T, D], h0: [D]) -> [T, D] {
    param A: [D', D] init normal(0, 0.3)
    return scan t over T reverse carry (h: [D] = h0) {
        h = h[D as D'] @[D'] A + x[t]
        emit h
    }
}""", "T=1|T=3")

OK["gla_heads_reverse"] = ("""axis T, H = 2, K = 2, V = 3
block F(q: [T, H, K], k: [T, H, K], v: [T, H, V], g: [T, H]) -> [T, H, V] {
    return scan t over T reverse carry (S: [H, K, V] = 0) {
        S = sigmoid(g[t]) * S + k[t] * v[t]
        emit q[t] @[K] S
    }
}""", "T=1|T=3")

OK["delta_rule_user"] = ("""axis T, K = 3, V = 2
block F(q: [T, K], k: [T, K], v: [T, V], b: [T]) -> [T, V] {
    return scan t over T carry (S: [K, V] = 0) {
        kk = l2norm(k[t], over = K)
        beta = sigmoid(b[t])
        S = S - beta * kk * (kk @[K] S) + beta * kk * v[t]
        emit q[t] @[K] S
    }
}""", "T=1|T=3")

OK["gru_elementwise"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D] {
    param wz: [D] init normal(0, 0.5)
    param wh: [D] init normal(0, 0.5)
    return scan t over T carry (h: [D] = 0) {
        z = sigmoid(x[t] + wz * h)
        n = tanh(x[t] + wh * h)
        h = (1 - z) * n + z * h
        emit h
    }
}""", "T=1|T=4")

OK["elman_relu_reverse"] = ("""axis T, E = 2, D = 3
block F(x: [T, E]) -> [T, D] {
    param W_ih: [E, D] init normal(0, 0.5)
    param W_hh: [D', D] init normal(0, 0.5)
    param b: [D] init zeros
    u = x @[E] W_ih + b
    return scan t over T reverse carry (h: [D] = 0) {
        h = relu(u[t] + h[D as D'] @[D'] W_hh)
        emit h
    }
}""", "T=1|T=3")

OK["lstm_stack_two"] = ("""axis T, E = 2, D = 3, G = 4
block Layer(x: [T, E]) -> [T, D] {
    param W_ih: [E, G, D] init normal(0, 0.5)
    param W_hh: [D', G, D] init normal(0, 0.5)
    param b: [G, D] init zeros
    u = x @[E] W_ih + b
    return scan t over T carry (h: [D] = 0, c: [D] = 0) {
        a = u[t] + h[D as D'] @[D'] W_hh
        c = sigmoid(a[G = 1]) * c + sigmoid(a[G = 0]) * tanh(a[G = 2])
        h = sigmoid(a[G = 3]) * tanh(c)
        emit h
    }
}
block Top(x: [T, D]) -> [T, D] {
    param W: [D, D'] init normal(0, 0.5)
    return scan t over T carry (h: [D] = 0) {
        h = tanh(x[t] + (h @[D] W)[D' as D])
        emit h
    }
}
block F(x: [T, E]) -> [T, D] {
    use l1 = Layer, l2 = Top
    return l2(l1(x))
}""", "T=1|T=3")

OK["birnn_concat_free"] = ("""axis T, E = 2, D = 3, D2
block F(x: [T, E]) -> [T, D2] {
    param W, Wr: [E, D] init normal(0, 0.5)
    param U, Ur: [D', D] init normal(0, 0.5)
    f = scan t over T carry (h: [D] = 0) {
        h = tanh(x[t] @[E] W + h[D as D'] @[D'] U)
        emit h
    }
    r = scan t over T reverse carry (h: [D] = 0) {
        h = tanh(x[t] @[E] Wr + h[D as D'] @[D'] Ur)
        emit h
    }
    return concat(f, r, over = D -> D2)
}""", "T=1|T=4")

OK["nested_reverse_inner"] = ("""axis T, S, D = 2
block F(x: [T, S, D]) -> [T, S, D] {
    param a: [D] init uniform(0.1, 0.9)
    return scan t over T carry (h: [D] = 0) {
        ys = scan s over S reverse carry (g: [D] = h) {
            g = tanh(a * g + x[t][S = s])
            emit g
        }
        h = ys[S = 0]
        emit ys
    }
}""", "T=1,S=1|T=3,S=2")

OK["scan_emits_two"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D], [T] {
    ys, ns = scan t over T carry (h: [D] = 0) {
        h = 0.5 * h + x[t]
        emit tanh(h), sum(h * h, over = D)
    }
    return ys, ns
}""", "T=1|T=3")

OK["scan_emit_scalar_carry_only"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T] {
    return scan t over T carry (c: [] = 0) {
        c = 0.9 * c + sum(x[t], over = D)
        emit c
    }
}""", "T=1|T=3")

OK["scan_in_lifted_call_heads"] = ("""axis T, H = 2, D = 3
block Cell(x: [T, D]) -> [T, D] {
    param a: [D] init uniform(0.1, 0.9)
    return scan t over T carry (h: [D] = 0) {
        h = a * h + x[t]
        emit h
    }
}
block F(x: [T, H, D]) -> [T, H, D] {
    use cell = Cell
    return cell(x)
}""", "T=1|T=3")

OK["scan_subblock_cell_call"] = ("""axis T, D = 3
block Cell(h: [D], x: [D]) -> [D] {
    param W: [D, D'] init normal(0, 0.5)
    return tanh(x + (h @[D] W)[D' as D])
}
block F(x: [T, D]) -> [T, D] {
    use cell = Cell
    return scan t over T carry (h: [D] = 0) {
        h = cell(h, x[t])
        emit h
    }
}""", "T=1|T=4")

OK["scan_time_index_number"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    return scan t over T carry (h: [D] = 0) {
        h = exp(-t / 4) * h + x[t] * sqrt(t + 1)
        emit where(t > 1, h, 2 * h)
    }
}""", "T=1|T=4")

OK["scan_reads_window_closure"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D] {
    m = mean(x, over = T)
    return scan t over T carry (h: [D] = 0) {
        h = tanh(x[t] - m + 0.5 * h)
        emit h
    }
}""", "T=1|T=3")

OK["scan_carry_lifted_over_extra"] = ("""axis T, N = 2, D = 3
block F(x: [T, D], s: [N]) -> [T, N, D] {
    return scan t over T carry (h: [N, D] = 0) {
        h = 0.5 * h + x[t] * s
        emit h
    }
}""", "T=1|T=3")

OK["scan_over_pooled"] = ("""axis C = 2, T, Tp
block F(x: [C, T]) -> [Tp, C] {
    p = maxpool(x, over = T -> Tp, size = 2, ceil_mode = true)
    return scan t over Tp carry (h: [C] = 0) {
        h = 0.8 * h + p[t]
        emit h
    }
}""", "T=1|T=5")

OK["conv_over_scan_output"] = ("""axis T, D = 2, E = 3, K = 2, T2
block F(x: [T, D]) -> [E, T2] {
    param w: [E, D, K] init normal(0, 0.5)
    y = scan t over T carry (h: [D] = 0) {
        h = tanh(x[t] + h)
        emit h
    }
    return conv(y, w, over = T -> T2, kernel = [K], padding = causal)
}""", "T=1|T=4")

OK["causal_conv_then_scan"] = ("""axis T, C = 3, K = 3
block F(x: [C, T]) -> [T, C] {
    param w: [C, K] init normal(0, 0.5)
    u = conv(x, w, over = T, kernel = [K], groups = [C], padding = causal, dilation = 2)
    return scan t over T carry (h: [C] = 0) {
        h = sigmoid(u[t]) * h + u[t]
        emit h
    }
}""", "T=1|T=5")

OK["depthwise_multiplier"] = ("""axis C = 2, M = 2, K = 3, T, T2
block F(x: [C, T]) -> [C, M, T2] {
    param w: [C, M, K] init normal(0, 0.5)
    return conv(x, w, over = T -> T2, kernel = [K], groups = [C], padding = 1, stride = 2)
}""", "T=1|T=4")

OK["conv_circular_min"] = ("""axis C = 2, K = 3, T
block F(x: [C, T]) -> [C, T] {
    param w: [C, C', K] init normal(0, 0.5)
    return conv(x, w, over = T, kernel = [K], padding = 1, padding_mode = circular)[C' as C]
}""", "T=1|T=2|T=5")

OK["conv_reflect_min"] = ("""axis C = 2, K = 3, T
block F(x: [C, T]) -> [C, T] {
    param w: [C, C', K] init normal(0, 0.5)
    return conv(x, w, over = T, kernel = [K], padding = 1, padding_mode = reflect)[C' as C]
}""", "T=2|T=5")

OK["conv_replicate_2d_perax"] = ("""axis C = 1, D = 2, KY = 3, KX = 1, Y, X, Y2, X2
block F(x: [C, Y, X]) -> [D, Y2, X2] {
    param w: [D, C, KY, KX] init normal(0, 0.5)
    return conv(x, w, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], padding = [2, 0], stride = [1, 2], padding_mode = replicate)
}""", "Y=1,X=1|Y=3,X=4")

OK["conv_transpose_1d"] = ("""axis C = 2, D = 3, K = 3, T, T2
block F(x: [C, T]) -> [D, T2] {
    param w: [C, D, K] init normal(0, 0.5)
    return conv_transpose(x, w, over = T -> T2, kernel = [K], stride = 2, padding = 1, output_padding = 1)
}""", "T=1|T=3")

OK["conv_3d_min"] = ("""axis C = 1, D = 2, K = 2, Z, Y, X, Z2, Y2, X2
block F(x: [C, Z, Y, X]) -> [D, Z2, Y2, X2] {
    param w: [D, C, K, K', K''] init normal(0, 0.5)
    return conv(x, w, over = [Z, Y, X] -> [Z2, Y2, X2], kernel = [K, K', K''])
}""", "Z=2,Y=2,X=2|Z=3,Y=2,X=4")

OK["upsample_trilinear"] = ("""axis C = 2, Z, Y, X, Z2, Y2, X2
block F(x: [C, Z, Y, X]) -> [C, Z2, Y2, X2] {
    return upsample(x, over = [Z, Y, X] -> [Z2, Y2, X2], scale = [2, 1, 3], mode = trilinear)
}""", "Z=1,Y=1,X=1|Z=2,Y=3,X=2")

OK["upsample_bilinear_align"] = ("""axis C = 2, Y, X, Y2, X2
block F(x: [C, Y, X]) -> [C, Y2, X2] {
    return upsample(x, over = [Y, X] -> [Y2, X2], scale = 2, mode = bilinear, align_corners = true)
}""", "Y=1,X=1|Y=2,X=3")

OK["pool_up_roundtrip"] = ("""axis C = 2, Y = 6, X = 6, Yh = 3, Xh = 3
block F(x: [C, Y, X]) -> [C, Y, X] {
    p = maxpool(x, over = [Y, X] -> [Yh, Xh], size = 2)
    a = avgpool(x, over = [Y, X] -> [Yh, Xh], size = 2)
    return x + upsample(p - a, over = [Yh, Xh] -> [Y, X], scale = 2)
}""", "")

OK["conv_lifted_kernel_per_channel"] = ("""axis C = 3, K = 2, T, T2
block Smooth(x: [T], k: [K]) -> [T2] {
    return conv(x, k, over = T -> T2, kernel = [K], stride = 2)
}
block F(x: [C, T]) -> [C, T2] {
    param k: [C, K] init normal(0, 1)
    return Smooth(x, k)
}""", "T=2|T=5")

OK["conv_hyper_kernel"] = ("""axis C = 2, D = 2, K = 2, Z = 3, T, T2
block F(x: [C, T], z: [Z]) -> [D, T2] {
    param H: [Z, D, C, K] init normal(0, 0.3)
    w = z @[Z] H
    return conv(x, w, over = T -> T2, kernel = [K], padding = 1)
}""", "T=1|T=3")

OK["groupnorm_conv"] = ("""axis C = 4, G = 2, K = C / G, KY = 3, Y, X
block F(x: [C, Y, X]) -> [C, Y, X] {
    param w: [C, C', KY, KY'] init normal(0, 0.3)
    h = conv(x, w, over = [Y, X], kernel = [KY, KY'], padding = 1)[C' as C]
    return layernorm(h[C -> G K], over = [K, Y, X])[G K -> C]
}""", "Y=1,X=1|Y=3,X=2")

OK["instancenorm_scan"] = ("""axis T, C = 2, L
block F(x: [T, C, L]) -> [T, C, L] {
    return scan t over T carry (h: [C, L] = 0) {
        h = layernorm(x[t] + 0.5 * h, over = L)
        emit h
    }
}""", "T=1,L=2|T=3,L=3")

OK["bn1d_no_over"] = ("""axis C = 3
block F(x: [C]) -> [C] {
    buffer m: [C] init zeros
    buffer v: [C] init ones
    buffer n: [] init zeros
    return batchnorm(x, m, v, n, eps = 1e-3)
}""", "")

OK["via_scan_diag"] = ("""axis T, D = 3
block F(x: [T, D]) -> [T, D] {
    param a: [D] init uniform(0.1, 0.9)
    return scan t over T via scan carry (h: [D] = 0) {
        h = a * h + x[t]
        emit h
    }
}""", "T=1|T=4")

OK["via_fft_lti"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    param A: [D', D] init normal(0, 0.3)
    return scan t over T via fft carry (h: [D] = 0) {
        h = h[D as D'] @[D'] A + x[t]
        emit h
    }
}""", "T=1|T=3")

OK["via_newton_gru"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    param w: [D] init normal(0, 0.5)
    return scan t over T reverse via newton carry (h: [D] = 0) {
        z = sigmoid(x[t] + w * h)
        h = (1 - z) * tanh(x[t]) + z * h
        emit h
    }
}""", "T=1|T=3")

OK["via_gla"] = ("""axis T, K = 2, V = 2
block F(q: [T, K], k: [T, K], v: [T, V], g: [T, K]) -> [T, V] {
    return scan t over T via gla carry (S: [K, V] = 0) {
        S = exp(-softplus(g[t])) * S + k[t] * v[t]
        emit q[t] @[K] S
    }
}""", "T=1|T=3")

OK["via_fused_rnn"] = ("""axis T, E = 2, D = 3
block F(x: [T, E]) -> [T, D] {
    param W_ih: [E, D] init normal(0, 0.5)
    param W_hh: [D', D] init normal(0, 0.5)
    param b: [D] init zeros
    return scan t over T via fused_rnn carry (h: [D] = 0) {
        h = tanh(x[t] @[E] W_ih + b + h[D as D'] @[D'] W_hh)
        emit h
    }
}""", "T=1|T=3")

OK["via_sequential_nested"] = ("""axis T, S, D = 2
block F(x: [T, S, D]) -> [T, D] {
    return scan t over T via sequential carry (h: [D] = 0) {
        g = scan s over S via scan carry (u: [D] = h) {
            u = 0.5 * u + x[t][S = s]
            emit u
        }
        h = g[S = 0]
        emit h
    }
}""", "T=1,S=1|T=2,S=3")

OK["scan_in_repeat_stack"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    param a: [D] init uniform(0.1, 0.9)
    repeat 2 {
        x = scan t over T carry (h: [D] = 0) {
            h = a * h + x[t]
            emit tanh(h)
        }
    }
    return x
}""", "T=1|T=3")

OK["stack_instances_scan"] = ("""axis T, D = 2
block L(x: [T, D]) -> [T, D] {
    param a: [D] init uniform(0.1, 0.9)
    return scan t over T carry (h: [D] = 0) {
        h = a * h + x[t]
        emit h
    }
}
block F(x: [T, D]) -> [T, D] {
    use layers = L × 3
    return layers(x)
}""", "T=1|T=3")

# ----------------------------------------------------------------------------- mistakes
ERR["via_unknown"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    return scan t over T via fused carry (h: [D] = 0) {
        h = tanh(x[t] + h)
        emit h
    }
}""", "did you mean")

ERR["via_fft_nonlinear"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    return scan t over T via fft carry (h: [D] = 0) {
        h = tanh(x[t] + h)
        emit h
    }
}""", "fft")

ERR["via_gla_on_diag"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    return scan t over T via gla carry (h: [D] = 0) {
        h = 0.5 * h + x[t]
        emit h
    }
}""", "gla")

ERR["via_scan_time_index"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    return scan t over T via scan carry (h: [D] = 0) {
        h = 0.5 * h + x[t] * t
        emit h
    }
}""", "scan")

ERR["via_fused_rnn_leaky"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    param W: [D', D] init normal(0, 0.5)
    return scan t over T via fused_rnn carry (h: [D] = 0) {
        h = 0.5 * h + 0.5 * tanh(x[t] + h[D as D'] @[D'] W)
        emit h
    }
}""", "fused_rnn")

ERR["via_scan_bn"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    buffer m: [D] init zeros
    buffer v: [D] init ones
    return scan t over T via scan carry (h: [D] = 0) {
        h = 0.5 * h + batchnorm(x[t], m, v)
        emit h
    }
}""", "scan")

ERR["carry_wrong_axes"] = ("""axis T, D = 2, E = 3
block F(x: [T, D]) -> [T, D] {
    param W: [D, E] init normal(0, 0.5)
    return scan t over T carry (h: [D] = 0) {
        h = x[t] @[D] W
        emit h
    }
}""", "")

ERR["scan_over_missing_axis"] = ("""axis T, S, D = 2
block F(x: [T, D]) -> [T, D] {
    return scan t over S carry (h: [D] = 0) {
        h = h + x[t]
        emit h
    }
}""", "")

ERR["scan_no_emit"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    return scan t over T carry (h: [D] = 0) {
        h = h + x[t]
    }
}""", "emits nothing")

ERR["conv_kernel_axis_missing"] = ("""axis C = 2, D = 3, K = 3, T, T2
block F(x: [C, T]) -> [D, T2] {
    param w: [D, C] init normal(0, 0.5)
    return conv(x, w, over = T -> T2, kernel = [K])
}""", "")

ERR["conv_bound_too_small"] = ("""axis C = 2, D = 3, K = 3, T = 2, T2
block F(x: [C, T]) -> [D, T2] {
    param w: [D, C, K] init normal(0, 0.5)
    return conv(x, w, over = T -> T2, kernel = [K], dilation = 2)
}""", "")

ERR["conv_reflect_too_short"] = ("""axis C = 2, K = 5, T = 2
block F(x: [C, T]) -> [C, T] {
    param w: [C, C', K] init normal(0, 0.5)
    return conv(x, w, over = T, kernel = [K], padding = 2, padding_mode = reflect)[C' as C]
}""", "reflect")

ERR["conv_bad_padding_mode"] = ("""axis C = 2, K = 3, T
block F(x: [C, T]) -> [C, T] {
    param w: [C, C', K] init normal(0, 0.5)
    return conv(x, w, over = T, kernel = [K], padding = 1, padding_mode = mirror)[C' as C]
}""", "")

ERR["conv_transpose_groups"] = ("""axis C = 2, K = 3, T, T2
block F(x: [C, T]) -> [C, T2] {
    param w: [C, K] init normal(0, 0.5)
    return conv_transpose(x, w, over = T -> T2, kernel = [K], groups = [C], stride = 2)
}""", "")

ERR["stride_list_wrong_len"] = ("""axis C = 2, D = 2, K = 3, Y, X, Y2, X2
block F(x: [C, Y, X]) -> [D, Y2, X2] {
    param w: [D, C, K, K'] init normal(0, 0.5)
    return conv(x, w, over = [Y, X] -> [Y2, X2], kernel = [K, K'], stride = [2, 1, 1])
}""", "")

ERR["bilinear_one_axis"] = ("""axis C = 2, T, T2
block F(x: [C, T]) -> [C, T2] {
    return upsample(x, over = T -> T2, scale = 2, mode = bilinear)
}""", "")

ERR["upsample_fraction"] = ("""axis C = 2, T, T2
block F(x: [C, T]) -> [C, T2] {
    return upsample(x, over = T -> T2, scale = 1.5)
}""", "")

ERR["pool_bound_mismatch"] = ("""axis C = 2, T = 5, Tp = 3
block F(x: [C, T]) -> [C, Tp] {
    return maxpool(x, over = T -> Tp, size = 2)
}""", "")

ERR["ceil_mode_not_bool"] = ("""axis C = 2, T, Tp
block F(x: [C, T]) -> [C, Tp] {
    return maxpool(x, over = T -> Tp, size = 2, ceil_mode = 1)
}""", "")

ERR["bn_stat_param"] = ("""axis C = 3, L
block F(x: [C, L]) -> [C, L] {
    param m: [C] init zeros
    buffer v: [C] init ones
    return batchnorm(x, m, v, over = L)
}""", "buffer")

ERR["bn_stat_wrong_axes"] = ("""axis C = 3, L
block F(x: [C, L]) -> [C, L] {
    buffer m: [L] init zeros
    buffer v: [L] init ones
    return batchnorm(x, m, v, over = L)
}""", "")

ERR["halting_no_mix"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    param w: [D] init normal(0, 0.3)
    y, p = halting n max 3 carry (s: [T, D] = x) {
        s = tanh(s)
        halt sigmoid(s @[D] w)
    }
    return y
}""", "mix")

ERR["halting_p_axis_not_carried"] = ("""axis T, D = 2
block F(x: [T, D]) -> [D] {
    param w: [T] init normal(0, 0.3)
    y, p = halting n max 3 mix graves carry (s: [D] = sum(x, over = T)) {
        s = tanh(s)
        halt sigmoid(w)
    }
    return y
}""", "")

ERR["halting_eps_twice"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    param w: [D] init normal(0, 0.3)
    y, p = halting n max 3 eps 0.1 eps 0.2 mix graves carry (s: [T, D] = x) {
        s = tanh(s)
        halt sigmoid(s @[D] w)
    }
    return y
}""", "")

ERR["halting_max_zero"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    param w: [D] init normal(0, 0.3)
    y, p = halting n max 0 mix graves carry (s: [T, D] = x) {
        s = tanh(s)
        halt sigmoid(s @[D] w)
    }
    return y
}""", "")

ERR["scan_reverse_twice"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    return scan t over T reverse reverse carry (h: [D] = 0) {
        h = 0.5 * h + x[t]
        emit h
    }
}""", "")

ERR["groups_axis_not_on_w"] = ("""axis C = 2, D = 2, K = 3, T
block F(x: [C, T]) -> [D, T] {
    param w: [D, K] init normal(0, 0.5)
    return conv(x, w, over = T, kernel = [K], groups = [C], padding = 1)
}""", "")

ERR["causal_two_axes"] = ("""axis C = 2, K = 3, Y, X
block F(x: [C, Y, X]) -> [C, Y, X] {
    param w: [C, C', K, K'] init normal(0, 0.5)
    return conv(x, w, over = [Y, X], kernel = [K, K'], padding = causal)[C' as C]
}""", "")

OK["repeat_in_scan_step"] = ("""axis T, D = 2
block F(x: [T, D]) -> [T, D] {
    param w: [D] init normal(0, 0.5)
    return scan t over T carry (h: [D] = 0) {
        u = x[t]
        repeat 2 {
            u = tanh(u + w * h)
        }
        h = u
        emit h
    }
}""", "T=1|T=3")


def _write(tmp: Path, name: str, text: str, sizes: str) -> tuple[Path, dict[str, str]]:
    head = {"expect": "ok", **({"sizes": sizes} if sizes else {})}
    path = tmp / f"{name}.ncd"
    path.write_text(f"# {name}\n# expect: ok\n" + (f"# sizes: {sizes}\n" if sizes else "") + text + "\n")
    return path, head


@pytest.mark.parametrize("name", sorted(OK))
def test_what_checks_runs_at_every_size(name: str, tmp_path: Path) -> None:
    path, head = _write(tmp_path, name, *OK[name])
    run_ok(path, head, tmp_path, every_size=True)


SCANS = sorted(n for n, (text, _) in OK.items() if "scan t over" in text)


@pytest.mark.parametrize("name", SCANS)
def test_every_backend_runs_it_as_the_loop_does_or_refuses_it_located(name: str) -> None:
    text, sizes = OK[name]
    bound = dict(_size_sets(sizes)[-1])
    ir = ncd.check(text, **bound)
    inputs = _inputs(ir, 2)
    torch.manual_seed(0)
    loop = ncd.load(text, scan_backend="sequential", **bound).double()
    want = loop(*inputs)
    for backend in NAMES:
        try:
            module = ncd.load(text, scan_backend=backend, **bound).double()
        except ncd.NcdError as err:
            assert err.line is not None and err.hint, f"{backend}: {err}"
            continue
        module.load_state_dict(loop.state_dict())
        leaves = [x.clone().requires_grad_() if x.is_floating_point() else x for x in inputs]
        got = module(*leaves)
        for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=lambda m: f"{backend}: {m}")
        outs = got if isinstance(got, tuple) else (got,)
        sum(o.sum() for o in outs if o.requires_grad).backward()


@pytest.mark.parametrize("name", sorted(ERR))
def test_a_mistake_is_refused_located_with_a_hint(name: str) -> None:
    text, want = ERR[name]
    with pytest.raises(ncd.NcdError) as info:
        ncd.check(text)
    err = info.value
    assert want in f"{err.message} {err.hint or ''}", str(err)
    assert err.line is not None and err.col is not None and err.hint, str(err)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ncd.cli", *args], capture_output=True, text=True,
                          env={**os.environ}, timeout=300)


def test_the_command_line_runs_what_checks_and_locates_what_it_refuses(tmp_path: Path) -> None:
    paths = [_write(tmp_path, n, *OK[n])[0] for n in ("via_newton_gru", "scan_over_pooled")]
    assert _cli("check", *map(str, paths)).returncode == 0
    run = _cli("run", str(paths[1]), "--backward", "--json", "--set", "T=1", "--scan-backend", "scan")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["outputs"]
    bad = tmp_path / "bad.ncd"
    bad.write_text(ERR["via_fft_nonlinear"][0] + "\n")
    res = _cli("check", str(bad), "--json")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert all(r["error"]["line"] and r["error"]["hint"] for r in json.loads(res.stdout))


# ----------------------------------------------------------------------------- regressions
def test_a_ceil_mode_pool_keeps_a_window_that_runs_past_the_end() -> None:
    """maxpool(size 2, ceil_mode) over a length-1 axis checked (output 1, as torch) but the
    runtime refused the input as too small for the window."""
    x = torch.randn(2, 2, 1, dtype=torch.float64)
    spec = ("axis C = 2, T, Tp\nblock F(x: [C, T]) -> [C, Tp] {\n"
            "    return maxpool(x, over = T -> Tp, size = 2, ceil_mode = true)\n}\n")
    got = ncd.load(spec, T=1).double()(x)
    torch.testing.assert_close(got, F.max_pool1d(x, 2, ceil_mode=True))
    y = torch.randn(2, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(ncd.load(OK["avgpool_ceil_pad"][0]).double()(y),
                               F.avg_pool1d(y, 3, stride=2, padding=1, ceil_mode=True))


def test_returning_a_call_of_several_outputs_returns_them_all() -> None:
    """`return G(x)` of a two-output G returned its first output only (the check said 'returns 1')."""
    spec = ("axis D = 3\nblock G(x: [D]) -> [D], [D] {\n    return x, 2 * x\n}\n"
            "block F(x: [D]) -> [D], [D] {\n    return G(x)\n}\n")
    x = torch.randn(2, 3)
    a, b = ncd.load(spec)(x)
    torch.testing.assert_close(a, x)
    torch.testing.assert_close(b, 2 * x)
    with pytest.raises(ncd.NcdError, match="unpack it first") as info:
        ncd.check(spec.replace("-> [D], [D] {\n    return G", "-> [D], [D], [D] {\n    return x, G"))
    assert info.value.line == 6


def test_a_repeat_in_the_step_reading_the_carry_is_not_state_free() -> None:
    """The classifier read a repeat's body through its explicit inputs only, so a repeat reading
    the carry by closure counted as state-free: the step was 'linear diagonal' and ran as a
    diagonal scan of a wrong recurrence."""
    m = ncd.load(OK["repeat_in_scan_step"][0]).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64)
    w, h, ys = m.w, torch.zeros(2, 2, dtype=torch.float64), []
    for t in range(4):  # the step written plainly
        u = x[:, t]
        for _ in range(2):
            u = torch.tanh(u + w * h)
        h = u
        ys.append(h)
    torch.testing.assert_close(m(x), torch.stack(ys, 1))
    with pytest.raises(ncd.NcdError, match="cannot run via scan|cannot run this scan"):
        ncd.load(OK["repeat_in_scan_step"][0], scan_backend="scan")


def test_a_step_holding_a_scan_is_refused_by_newton_at_the_scan() -> None:
    """A Newton solve of a step with an inner scan died in functorch (an autograd.Function under
    vmap) or in the step's batched evaluation."""
    with pytest.raises(ncd.NcdError, match="holds a scan of its own") as info:
        ncd.load(OK["nested_reverse_inner"][0], scan_backend="newton", T=2, S=2)
    assert info.value.line == 4 and info.value.hint
    assert ncd.load(OK["nested_reverse_inner"][0], T=2, S=2)  # auto runs it as the loop
