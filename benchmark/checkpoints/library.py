"""The backbone libraries' own formats: torchvision, timm and Hugging Face checkpoints.

The suite's backbones keep the library model under `body` with the library's parameter names,
so torchvision / timm files (and MMSegmentation's HRNet, which uses the same names) load by name
after stripping the best prefix (`module.`, `backbone.body.`, ...). Hugging Face models go
through `from_pretrained`, which knows their legacy key names (`segformer.encoder.block...`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmark.checkpoints.coverage import skipped


def best_prefix(keys: list[str], target: set[str]) -> str:
    """The prefix whose removal makes most checkpoint keys name a target tensor."""
    candidates = {""}
    for k in keys:
        parts = k.split(".")
        candidates.update(".".join(parts[:n]) + "." for n in (1, 2, 3) if len(parts) > n)

    def hits(prefix: str) -> int:
        return sum(k[len(prefix):] in target for k in keys if k.startswith(prefix))

    return max(sorted(candidates, key=len), key=hits)


def convert_by_name(body: nn.Module, state: dict[str, Tensor]) -> tuple[str, dict[str, Tensor]]:
    """torchvision / timm / MMSeg HRNet / the suite's own files: the prefix that makes most keys
    fit `body`, stripped, and the keys put under `body.`. Returns (prefix, converted)."""
    own = {k for k in body.state_dict() if not skipped(k)}
    prefix = best_prefix(list(state), own)
    return prefix, {f"body.{k[len(prefix):]}" if k.startswith(prefix) else k: v
                    for k, v in state.items()}


def convert_hf(body: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face files: `from_pretrained` applies the library's key renaming and prefix
    handling; the tensors it placed come back under `body.`, the rest under their own names."""
    import transformers

    logging = transformers.utils.logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        loaded_model, info = type(body).from_pretrained(
            None, config=body.config, state_dict=state, output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()
    absent = set(info["missing_keys"]) | {k for k, _, _ in info["mismatched_keys"]}
    out = {f"body.{k}": v for k, v in loaded_model.state_dict().items() if k not in absent}
    out.update({k: state[k] for k in info["unexpected_keys"] if k in state})
    for key, got, _ in info["mismatched_keys"]:  # a placeholder of the file's shape, so
        out[f"body.{key}"] = torch.empty(tuple(got))  # that the strict load names the mismatch
    return out
