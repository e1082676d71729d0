"""Checks of the plain Python arguments (numbers, flags) before they reach the extension.

Tensors, impl and kind are checked by the extension and the C++ core; these are the arguments
nanobind would otherwise reject with a generic signature-mismatch message that names nothing.
Errors read like the core's: "op: argument 'name': expected ..., got ...".
"""

import numbers
import operator


def error(cls, op, arg, expected, got):
    """An exception of type `cls` in loraops' format, with the parts as attributes."""
    exc = cls(f"{op}: argument '{arg}': expected {expected}, got {got}")
    exc.op, exc.argument, exc.expected, exc.got = op, arg, expected, got
    return exc


def type_name(v):
    if v is None:
        return "None"
    t = type(v)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def real(op, arg, v):
    """A Python float from any real number (int, float, numpy scalar); bool is refused."""
    if type(v) is float:  # the common case, without the slow ABC isinstance below
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise error(TypeError, op, arg, "a real number (float)", type_name(v))
    return float(v)


def optional_real(op, arg, v):
    return None if v is None else real(op, arg, v)


def integer(op, arg, v):
    """A Python int from an int or numpy integer; bool and float are refused."""
    if type(v) is int and -(2**31) <= v < 2**31:  # the common case, fast
        return v
    if isinstance(v, bool):
        raise error(TypeError, op, arg, "an int", type_name(v))
    try:
        i = operator.index(v)
    except TypeError:
        raise error(TypeError, op, arg, "an int", type_name(v)) from None
    if not -(2**31) <= i < 2**31:  # the core's dims are C ints; this is out of any tensor's range
        raise error(ValueError, op, arg, "a dim within the tensor's rank", str(i))
    return i


def flag(op, arg, v):
    """A bool from a bool or numpy bool; ints and other truthy objects are refused."""
    if isinstance(v, bool):
        return v
    t = type(v)
    if t.__module__ == "numpy" and t.__name__ in ("bool_", "bool"):
        return bool(v)
    raise error(TypeError, op, arg, "a bool", type_name(v))
