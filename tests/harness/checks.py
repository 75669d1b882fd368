"""The checks every pytest module of the suite uses: one family, one shape.

    check(name, ok, detail)                           an invariant
    check_equal(name, actual, expected)               exactly equal
    check_close(name, actual, expected, rel=, ...)    within the tolerances given

Each prints one line, `ok   <name>: <what was measured>` or `FAIL <name>: ...`,
so a passing run's log still holds every measured deviation, then fails the
test (AssertionError) when the check does not hold. `actual` and `expected`
may be torch tensors, numpy arrays, lists or numbers; deviations are measured
in float64.
"""
import numpy as np


def _say(ok, name, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def check(name, ok, detail=""):
    """An invariant that holds or not (a count, an exit status, a message)."""
    _say(bool(ok), name, detail)
    assert ok, f"{name}: {detail}" if detail else name


def _short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def _is_tensor(value):
    return hasattr(value, "detach") and hasattr(value, "dtype")


def _same(actual, expected):
    if _is_tensor(actual) or _is_tensor(expected):
        import torch
        return (_is_tensor(actual) and _is_tensor(expected) and actual.dtype == expected.dtype
                and actual.shape == expected.shape and bool(torch.equal(actual.cpu(), expected.cpu())))
    if isinstance(actual, np.ndarray) or isinstance(expected, np.ndarray):
        return (isinstance(actual, np.ndarray) and isinstance(expected, np.ndarray)
                and actual.dtype == expected.dtype and np.array_equal(actual, expected))
    return actual == expected


def check_equal(name, actual, expected):
    """actual == expected: values, and for tensors and arrays also dtype and shape."""
    ok = _same(actual, expected)
    shown = repr(actual) if len(repr(actual)) <= 80 and not hasattr(actual, "shape") else ""
    _say(ok, name, shown if ok else f"got {_short(actual)}, expected {_short(expected)}")
    assert ok, f"{name}: got {_short(actual)}, expected {_short(expected)}"


def _float64(value):
    if _is_tensor(value):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def check_close(name, actual, expected, rel=None, rel_each=None, abs=None, floor=0.0, reference="reference"):
    """actual ≈ expected, same shape, under every tolerance given:

    rel       max |a − e| / max |e|: the norm-wise relative error the tensor
              parity checks bound (a reference of all zeros fails it)
    rel_each  max over elements of |a − e| / max(|e|, floor): per-value
              relative error (losses per step, norms, metrics)
    abs       max |a − e|

    A NaN on either side fails. `reference` names the expected side in the
    printed line."""
    assert rel is not None or rel_each is not None or abs is not None, f"{name}: no tolerance given"
    a, e = _float64(actual), _float64(expected)
    if a.shape != e.shape:
        detail = f"shape {a.shape} != {reference} {e.shape}"
        _say(False, name, detail)
        raise AssertionError(f"{name}: {detail}")
    diff = np.abs(a - e)
    worst = float(diff.max()) if diff.size else 0.0
    parts, ok = [], True
    if rel is not None:
        scale = float(np.abs(e).max()) if e.size else 0.0
        err = worst / max(scale, 1e-30)
        ok = ok and err <= rel and scale > 0
        parts.append(f"relative error {err:.2e} (tolerance {rel:.0e}, max |{reference}| {scale:.2e})")
    if rel_each is not None:
        err = float((diff / np.maximum(np.abs(e), floor)).max()) if diff.size else 0.0
        ok = ok and err <= rel_each
        parts.append(f"worst relative difference {err:.2e} (tolerance {rel_each:.0e})")
    if abs is not None:
        ok = ok and worst <= abs
        parts.append(f"max |difference| {worst:.2e} (tolerance {abs:.0e})")
    detail = ", ".join(parts)
    _say(ok, name, detail)
    assert ok, f"{name}: {detail}"
