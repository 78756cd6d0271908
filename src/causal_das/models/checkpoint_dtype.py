"""Which dtype a Hugging Face checkpoint is loaded in, and why.

transformers loads a checkpoint in the dtype it was stored in. A Llama, Qwen2 or Gemma-2 checkpoint
is usually stored in bf16, and loaded that way it would meet the DAS engine's fp32 activation cache
and W in every site's suffix (a dtype error, or silently rounded states), and fine-tuning it would
apply AdamW steps of lr 2e-5 to bf16 weights, whose resolution (8 bits of mantissa) swallows most
of them. So a checkpoint stored in anything but fp32 is loaded in fp32 on purpose, and says so: one
line on the console, and `compute.network_dtype` (stored dtype, loaded dtype, reason) in every
result file written afterwards (`devices.note_network_dtype`; the fine-tuning record also keeps it
in its `model` entry). The one exception is running (not fine-tuning) a bf16 checkpoint with
`--precision bf16`: it stays in bf16, as asked, end to end; the engine still keeps its activation
cache, W and the interchange in fp32, and the suffix takes those fp32 states under bf16 autocast,
which casts them at each matrix product. An fp32 checkpoint loads exactly as it always did and
leaves no trace in the records.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from causal_das.runtime import devices

# safetensors' names of the floating dtypes (integer tensors, e.g. position ids, do not tell the weights' dtype).
_SAFETENSORS_FLOATS = {"F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16",
                       "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def stored_dtypes(path: str, config) -> tuple[str, ...]:
    """The floating dtypes the checkpoint's weights are stored in, e.g. ("bfloat16",): from the
    headers of the safetensors files of a local directory (exact, and cheap: no tensor is read),
    else from the config's `dtype`; () when neither says."""
    directory = Path(path)
    found = set()
    if directory.is_dir():
        for file in sorted(directory.glob("*.safetensors")):
            try:
                with file.open("rb") as handle:
                    (length,) = struct.unpack("<Q", handle.read(8))
                    header = json.loads(handle.read(min(length, 100_000_000)))
                found.update(_SAFETENSORS_FLOATS[entry["dtype"]] for name, entry in header.items()
                             if name != "__metadata__" and entry["dtype"] in _SAFETENSORS_FLOATS)
            except (OSError, ValueError, struct.error, AttributeError, KeyError, TypeError):
                continue  # a broken file: loading it says so in the loader's own one line
    if found:
        return tuple(sorted(found))
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if dtype is None or dtype == "auto":
        return ()
    return (str(dtype).removeprefix("torch."),)


def choose(path: str, config, flag: str, finetune: bool) -> tuple[torch.dtype, dict | None]:
    """(the dtype to load the checkpoint at `path` in, the record of why; None for an fp32 one).

    Args:
        path: the checkpoint (a local directory or a hub name).
        config: its transformers config, already read.
        flag: the flag that named it, for the console line (--model_path, --base_model).
        finetune: whether it is about to be trained (always fp32 then)."""
    stored = stored_dtypes(path, config)
    if stored in ((), ("float32",)):  # fp32 (or unsaid: transformers' own default for such a file)
        return torch.float32, None
    label = "+".join(stored)
    if not finetune and stored == ("bfloat16",) and devices.current()["precision"] == "bf16":
        return torch.bfloat16, {"stored_dtype": label, "loaded_dtype": "bfloat16",
                                "reason": f"{flag} {path} is stored in bfloat16 and kept in it (--precision bf16); "
                                          "the activation cache, W and the interchange stay float32"}
    if finetune:
        why = "fine-tuned in float32 (AdamW's small steps vanish in bf16/fp16 weights); the fine-tuned model is saved in float32"
    else:
        why = ("loaded in float32 on purpose, so that the float32 activation cache, W and interchange meet float32 layers "
               "(--precision bf16 runs its forward passes under bf16 autocast; a bf16 checkpoint then stays in bf16)")
    return torch.float32, {"stored_dtype": label, "loaded_dtype": "float32", "reason": f"{flag} {path} is stored in {label}: {why}"}


def announce(record: dict | None) -> None:
    """Says how a network was loaded, on the console (when not as stored in fp32) and in the
    records of what this process writes next."""
    devices.note_network_dtype(record)
    if record is not None:
        print(record["reason"], flush=True)

