"""X already in GPU memory: any object with ``__cuda_array_interface__`` (CuPy, PyTorch, Numba,
JAX) or a CUDA DLPack export (``__dlpack__`` / ``__dlpack_device__``). The CUDA backend reads it
in place: no copy to the host and back."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Optional

# DLPack device types that live in CUDA device memory (kDLCUDA, kDLCUDAManaged).
_DLPACK_CUDA = (2, 13)
_DLPACK_CPU = 1
_FLOAT_CODE = 2  # kDLFloat


@dataclass(frozen=True)
class DeviceMatrix:
    """A C-contiguous (rows, cols) float64/float32 matrix in device memory, and the object that
    keeps that memory alive."""

    ptr: int
    rows: int
    cols: int
    f32: bool
    owner: Any

    def as_tuple(self) -> tuple:
        return (self.ptr, self.rows, self.cols, self.f32)


def _advice(what: str) -> str:
    return (f"{what}; the CUDA backend reads X in place only as a C-contiguous 2-D float64 or "
            "float32 array (e.g. cupy.ascontiguousarray(X, dtype=cupy.float64) or "
            "X.contiguous().double() in PyTorch)")


def _check(shape: tuple, itemsize: int, strides: Optional[tuple], kind: str) -> None:
    if len(shape) != 2:
        raise ValueError(_advice(f"X in GPU memory must be 2-D, got shape {tuple(shape)}"))
    if kind != "f" or itemsize not in (4, 8):
        raise TypeError(_advice(f"X in GPU memory has element type {kind}{itemsize}"))
    rows, cols = shape
    if strides is not None and rows > 0 and cols > 0:
        # Strides of length-1 axes do not matter; every other one must be C-contiguous.
        s0, s1 = strides
        if (cols > 1 and s1 != itemsize) or (rows > 1 and s0 != cols * itemsize):
            raise ValueError(_advice(f"X in GPU memory is not C-contiguous (strides {strides})"))


def _from_interface(obj: Any, iface: dict) -> DeviceMatrix:
    shape = tuple(int(s) for s in iface["shape"])
    typestr = str(iface["typestr"])
    if typestr[0] == ">":
        raise TypeError(_advice("X in GPU memory is big-endian"))
    if iface.get("mask") is not None:
        raise ValueError("X in GPU memory has a mask; rif_native needs plain values")
    strides = iface.get("strides")
    _check(shape, int(typestr[2:]), None if strides is None else tuple(strides), typestr[1])
    ptr = int(iface["data"][0])
    _check_pointer(ptr, int(typestr[2:]))
    return DeviceMatrix(ptr, shape[0], shape[1], typestr[2:] == "4", obj)


def _check_pointer(ptr: int, itemsize: int) -> None:
    if ptr % itemsize:
        raise ValueError(_advice(f"X in GPU memory starts at an address ({ptr:#x}) that is not "
                                 f"a multiple of its element size {itemsize}"))


# -- DLPack through ctypes: the C structures of the DLPack ABI (dlpack.h, v0.6 and later).
class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                ("dtype", _DataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


def _capsule_tensor(capsule: Any) -> _Tensor:
    """The DLTensor at the head of a "dltensor" capsule's DLManagedTensor (not consumed: the
    capsule keeps its memory alive and frees it when it is collected)."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = get(capsule, b"dltensor")
    return _Tensor.from_address(address)


def dlpack_matrix(capsule: Any, owner: Any) -> tuple[DeviceMatrix, int]:
    """(DeviceMatrix, DLPack device type) described by a DLPack capsule."""
    t = _capsule_tensor(capsule)
    if t.dtype.lanes != 1:
        raise TypeError(_advice("X in GPU memory has vector lanes"))
    kind = "f" if t.dtype.code == _FLOAT_CODE else "?"
    shape = tuple(t.shape[k] for k in range(t.ndim))
    itemsize = t.dtype.bits // 8
    strides = None if not t.strides else tuple(t.strides[k] * itemsize for k in range(t.ndim))
    _check(shape, itemsize, strides, kind)
    ptr = (t.data or 0) + int(t.byte_offset)
    _check_pointer(ptr, itemsize)
    return DeviceMatrix(ptr, shape[0], shape[1], itemsize == 4, (owner, capsule)), \
        int(t.device.device_type)


def _cuda_export(obj: Any) -> Optional[tuple[str, Any]]:
    """How obj exports CUDA device memory: ("interface", its __cuda_array_interface__),
    ("dlpack", None) for a CUDA DLPack producer, or None (host data, or no export at all)."""
    if isinstance(obj, (list, tuple)) or type(obj).__module__ == "numpy":
        return None
    try:
        iface = getattr(obj, "__cuda_array_interface__", None)
    except (RuntimeError, TypeError):  # e.g. a PyTorch CPU tensor raises
        iface = None
    if iface is not None:
        return "interface", iface
    dev = getattr(obj, "__dlpack_device__", None)
    try:
        return ("dlpack", None) if dev is not None and int(dev()[0]) in _DLPACK_CUDA else None
    except Exception:
        return None


def device_matrix(X: Any) -> Optional[DeviceMatrix]:
    """The DeviceMatrix of X when X lives in CUDA device memory, else None (host data)."""
    export = _cuda_export(X)
    if export is None:
        return None
    kind = type(X).__name__
    if export[0] == "interface":
        iface = export[1]
        try:
            return _from_interface(X, iface)
        except (KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
            if isinstance(exc, (TypeError, ValueError)) and "GPU memory" in str(exc):
                raise  # our own message about a well-formed interface
            raise TypeError(
                f"X ({kind}) has a malformed __cuda_array_interface__ ({type(exc).__name__}: "
                f"{str(exc)[:80]}): expected a dict with 'shape', 'typestr' and 'data'") from None
    try:
        matrix, _ = dlpack_matrix(X.__dlpack__(), X)
    except (TypeError, ValueError) as exc:
        if "GPU memory" in str(exc):
            raise
        raise TypeError(f"X ({kind}) claims a CUDA DLPack export, but its __dlpack__() did not "
                        f"give a DLPack capsule ({type(exc).__name__}: {str(exc)[:80]})") from None
    return matrix


def is_device_array(v: Any) -> bool:
    """Whether v holds its data in CUDA device memory (any shape or type)."""
    return _cuda_export(v) is not None
