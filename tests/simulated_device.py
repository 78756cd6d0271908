"""A second device on a CPU-only machine, strict the way CUDA is, for tests of device discipline.

CI has no GPU, yet code that runs on the CPU can still mix devices on one: a trained W handed back on
the CPU multiplied with activations on the GPU, CPU `input_ids` indexed with GPU indices, a CPU
generator asked for GPU random numbers. `simulated_device()` makes such code fail here as it would
on CUDA:

- the device is PyTorch's PrivateUse1 backend, renamed `simgpu`, set up as a Python backend (device
  guard, hooks, an autocast-capable module). A wrapper-tensor subclass that merely *reports*
  `cuda` does not work on a CPU-only build: autograd asks CUDA's device guard, which is not linked,
  and the process aborts; `meta` has a guard but transformers and torch.autocast treat it
  specially. PrivateUse1 is a real device type with nothing behind it.
- a tensor "on" `simgpu` is a `SimTensor`: a wrapper subclass (`_make_wrapper_subclass`, as DTensor
  does) that reports `simgpu:0` and holds a plain CPU tensor. Autograd, optimizers and
  `nn.Module.to` treat it as any tensor on another device.
- a `TorchDispatchMode` sees every aten call, unwraps, runs it on the CPU data, and rewraps the
  outputs that belong on the device. Before running it applies CUDA's rules: all tensor arguments
  on one device, except CPU 0-dim tensors in pointwise ops (TensorIterator treats them as scalars),
  CPU indices into a device tensor (`index`, `index_put_`) and `copy_` between devices; a CPU
  generator may not draw device random numbers. Anything else raises as CUDA would.
- `torch.tensor(..., device=)` builds below the dispatcher, so a `TorchFunctionMode` builds it on
  the CPU and moves it.
- it counts host synchronisations (`.item()`, `.tolist()`, `bool(t)`, copies to the CPU) so a test
  can check that a training step has none.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

NAME = "simgpu"
CPU = torch.device("cpu")

# Ops that move data between devices on purpose.
_COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default, torch.ops.aten._copy_from.default,
           torch.ops.aten._copy_from_and_resize.default}
# CUDA accepts CPU index tensors into a device tensor (it copies them over).
_CPU_INDICES_OK = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default,
                   torch.ops.aten._index_put_impl_.default}
_HOST_SYNC = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default}


_SYNCS = {"host_syncs": 0}  # the counter of the innermost `simulated_device()`


class DeviceMixError(RuntimeError):
    """What CUDA raises when one op gets tensors on two devices."""


class SimTensor(torch.Tensor):
    """A tensor that says it lives on `simgpu:0`; its data is the CPU tensor `data_`."""

    @staticmethod
    def __new__(cls, data: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(
            cls, data.shape, strides=data.stride(), storage_offset=data.storage_offset(), dtype=data.dtype,
            layout=data.layout, device=DEVICE, requires_grad=data.requires_grad)

    def __init__(self, data: torch.Tensor):
        self.data_ = data

    def __repr__(self, *, tensor_contents=None):
        return f"SimTensor({self.data_!r})"

    def tolist(self):
        # torch refuses .tolist() on subclasses; on CUDA it is a copy to the host.
        _SYNCS["host_syncs"] += 1
        return self.data_.tolist()

    def untyped_storage(self):
        # Savers (safetensors, transformers' tied-weight check) identify tensors by storage pointer.
        return self.data_.untyped_storage()

    def data_ptr(self):
        return self.data_.data_ptr()

    def numpy(self, *, force: bool = False):
        raise TypeError(f"can't convert {DEVICE} device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first.")

    def __array__(self, dtype=None, copy=None):
        return self.numpy()

    def __tensor_flatten__(self):
        return ["data_"], None

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride):
        return SimTensor(inner["data_"])

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        # Only reached outside `simulated_device()` (e.g. a tensor kept past the context).
        with _Mode(_SYNCS):
            return func(*args, **(kwargs or {}))


def _where(x) -> torch.device | None:
    if isinstance(x, SimTensor):
        return DEVICE
    if isinstance(x, torch.Tensor):
        return x.device
    return None


def _is_sim(device) -> bool:
    return device is not None and torch.device(device).type == NAME


class _Mode(TorchDispatchMode):
    def __init__(self, counter: dict):
        super().__init__()
        self.counter = counter  # host_syncs: reads of device values by the host

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        tensors = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        on_sim = any(isinstance(t, SimTensor) for t in tensors)
        target = kwargs.get("device")
        self._check(func, args, kwargs, tensors, on_sim, target)
        if func in _HOST_SYNC and on_sim:
            self.counter["host_syncs"] = self.counter.get("host_syncs", 0) + 1
        if func is torch.ops.aten._to_copy.default and on_sim and target is not None and not _is_sim(target):
            self.counter["host_syncs"] = self.counter.get("host_syncs", 0) + 1
        wrap = (on_sim and target is None) or _is_sim(target)
        if func is torch.ops.aten.copy_.default:
            wrap = isinstance(args[0], SimTensor)
        if _is_sim(target):
            kwargs["device"] = CPU
        unwrapped_args, unwrapped_kwargs = tree_map(_unwrap, (args, kwargs))
        out = func(*unwrapped_args, **unwrapped_kwargs)
        if func is torch.ops.aten.copy_.default:
            return args[0]
        if not wrap:
            return out
        return tree_map(lambda x: SimTensor(x) if isinstance(x, torch.Tensor) and not isinstance(x, SimTensor) else x, out)

    @staticmethod
    def _check(func, args, kwargs, tensors, on_sim, target):
        generator = kwargs.get("generator")
        if generator is not None and _is_sim(target) and generator.device.type != NAME:
            raise DeviceMixError(f"{func}: Expected a '{NAME}' device type for generator but found '{generator.device.type}'")
        if func in _COPIES or not tensors:
            return
        places = {_where(t) for t in tensors}
        if len(places) == 1:
            return
        if func in _CPU_INDICES_OK and isinstance(args[0], SimTensor):
            return  # CPU indices into a device tensor: CUDA copies them over
        if torch.Tag.pointwise in func.tags:
            # TensorIterator lets CPU 0-dim tensors (scalars) join device tensors.
            places = {_where(t) for t in tensors if not (t.device.type == "cpu" and not isinstance(t, SimTensor) and t.dim() == 0)}
            if len(places) <= 1:
                return
        raise DeviceMixError(f"Expected all tensors to be on the same device, but found at least two devices, "
                             f"{DEVICE} and cpu! ({func})")


class _Constructors(TorchFunctionMode):
    """`torch.tensor(data, device=...)` builds its tensor below the dispatcher's Python key, out of
    reach of `_Mode`: it is built on the CPU here and then moved, as CUDA does."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.tensor, torch.as_tensor) and _is_sim(kwargs.get("device")):
            kwargs.pop("device")
            return func(*args, **kwargs).to(DEVICE)
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and isinstance(args[0], SimTensor):
            # A list in an index becomes an index tensor on the device, below the dispatcher too;
            # as a CPU index tensor it means the same (CUDA accepts CPU indices).
            index = args[1]
            as_tensor = functools.partial(_list_index, func)
            index = tuple(map(as_tensor, index)) if isinstance(index, tuple) else as_tensor(index)
            args = (args[0], index, *args[2:])
        return func(*args, **kwargs)


def _list_index(func, index):
    return torch.tensor(index) if isinstance(index, list) else index


def _unwrap(x):
    if isinstance(x, SimTensor):
        return x.data_
    if isinstance(x, torch.device) and x.type == NAME:
        return CPU
    return x


class _BackendModule:
    """What torch asks of a device module: availability, counts, and the autocast dtypes."""

    @staticmethod
    def is_available():
        return True

    @staticmethod
    def device_count():
        return 1

    @staticmethod
    def current_device():
        return 0

    @staticmethod
    def get_amp_supported_dtype():
        return [torch.float16, torch.bfloat16]

    @staticmethod
    def is_autocast_enabled():
        return False

    @staticmethod
    def get_autocast_dtype():
        return torch.bfloat16

    @staticmethod
    def set_autocast_enabled(enabled):
        pass

    @staticmethod
    def set_autocast_dtype(dtype):
        pass

    @staticmethod
    def _is_in_bad_fork():
        return False

    @staticmethod
    def manual_seed_all(seed):
        pass


@functools.cache
def _register_backend() -> None:
    # Once per process (PrivateUse1 can be renamed once); harmless to every other test.
    from torch.utils import backend_registration

    backend_registration._setup_privateuseone_for_python_backend(rename=NAME, backend_module=_BackendModule())


_register_backend()
DEVICE = torch.device(NAME, 0)


@contextlib.contextmanager
def simulated_device():
    """Within the context `torch.device("simgpu")` is a strict second device; yields a dict whose
    `host_syncs` counts reads of device values by the host."""
    _SYNCS["host_syncs"] = 0
    with _Constructors(), _Mode(_SYNCS):
        yield _SYNCS
