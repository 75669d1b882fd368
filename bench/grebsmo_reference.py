"""Independent Python-torch reference for GreBsmo and Ω selection.

Written from docs/method.md ('The index set Ω': 'GreBsmo', 'Selecting Ω from
S', 'Random draws') alone, not from dsee's C++, so that the parity tests
(tests/parity/test_omega.py, test_omega_models.py) compare two
implementations of the same text, and bench/grebsmo times the same loop.
Plain torch, fp32, CPU; the caller sets torch.set_num_threads to match dsee.

  grebsmo_reference(W, gen)      the documented loop: 100 outer x 2 inner
                                 steps, tau = 0.01, rank +5 per outer step, S reset
  top_c(scores, c)               exactly c flat indices, largest score first,
                                 ties to the lower flat index, returned ascending
  omega_for_matrices(...)        one generator seeded once, matrices in order
"""
import torch

TAU = 0.01
OUTER = 100
INNER = 2
RANK_STEP = 5


def grebsmo_reference(W, gen, outer=OUTER):
    """S of the documented GreBsmo loop for W (m x n, fp32), `outer` outer
    steps (the documented 100 unless a test shortens it). Draws one
    randn(1, n) from gen."""
    m, n = W.shape
    max_rank = min(m, n)
    V = torch.randn(1, n, generator=gen, dtype=W.dtype).to(W.device)  # CPU draw, as dsee's
    S = torch.zeros_like(W)
    for _ in range(outer):
        S = torch.zeros_like(W)
        for _ in range(INNER):
            X = W - S
            Q = torch.linalg.qr(X @ V.T, mode="reduced").Q
            V = Q.T @ X
            L = Q @ V
            S = W - L
            S[S.abs() < TAU] = 0
        E = W - L - S
        room = max_rank - V.shape[0]
        if room > 0:
            R = torch.linalg.qr(E, mode="reduced").R
            V = torch.cat([V, R[: min(RANK_STEP, room), :]], dim=0)
    return S


def top_c(scores, c):
    """The c flat indices (row-major) of the largest scores; ties: lower index first."""
    flat = scores.reshape(-1).tolist()
    order = sorted(range(len(flat)), key=lambda i: (-flat[i], i))
    return sorted(order[:c])


def omega_for_matrices(matrices, c, seed, method="grebsmo", outer=OUTER):
    """matrices: list of (name, W out x in). Returns {name: [flat indices]}."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, W in matrices:
        if method == "grebsmo":
            scores = grebsmo_reference(W, gen, outer).abs()
        elif method == "magnitude":
            scores = W.abs()
        elif method == "random":
            scores = torch.randn(W.shape, generator=gen, dtype=W.dtype).abs()
        else:
            raise ValueError(method)
        out[name] = top_c(scores, c)
    return out
