"""A training folder (`Personalizer.train`'s `out_dir`) and what it allows: the resume plan.

Layout: `pytorch_lora_weights.safetensors` (the finished model, diffusers LoRA format),
`state.json` (progress, settings, the fingerprint, `model_id`), `checkpoint-N/trainer.pt` (LoRA +
optimizer, only the newest kept) and `class_images/` (the prior images, reused on resume).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
STATE_NAME = "state.json"


def training_state(out_dir: str | Path) -> dict | None:
    """The `state.json` of a training folder: {"step", "total", "complete", "class_name", ...} or None.

    A finished run also records "model_id" (see `model_id`)."""
    p = Path(out_dir) / STATE_NAME
    return json.loads(p.read_text()) if p.is_file() else None


def model_id(out_dir: str | Path | None) -> str | None:
    """Identity of the finished customized model in `out_dir`: the first 16 hex digits of its LoRA
    weights' sha256, or None when the folder holds no finished model. A pool records the id of the
    model that made it, so a retrained model makes the pool stale (`pool_info`)."""
    if out_dir is None:
        return None
    path = Path(out_dir) / LORA_WEIGHTS_NAME
    state = training_state(out_dir)
    if not path.is_file() or (state is not None and not state.get("complete")):
        return None
    return file_id(path)


def file_id(path: Path) -> str:
    """The first 16 hex digits of a file's sha256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def write_state(out_dir: Path, config, fingerprint: dict, step: int, complete: bool, **extra) -> None:
    """Write `state.json` atomically (temporary file, then rename). `config`: the PersonalizeConfig."""
    state = {"step": step, "total": config.train_steps, "complete": complete,
             "class_name": fingerprint["class_name"], "fingerprint": fingerprint,
             "config": dict(asdict(config)), **extra}
    tmp = out_dir / (STATE_NAME + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, default=str))
    tmp.replace(out_dir / STATE_NAME)


def checkpoints(out_dir: Path) -> list[Path]:
    """The folder's `checkpoint-N` folders, oldest first."""
    return sorted(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(out_dir: Path, unet, opt, step: int) -> None:
    """LoRA weights + optimizer state after `step` to `checkpoint-<step>/trainer.pt`; older ones go."""
    import torch
    from peft.utils import get_peft_model_state_dict

    ck = out_dir / f"checkpoint-{step}"
    ck.mkdir(exist_ok=True)
    tmp = ck / "trainer.pt.tmp"
    torch.save({"lora": {k: v.detach().cpu() for k, v in get_peft_model_state_dict(unet).items()},
                "optimizer": opt.state_dict(), "step": step}, tmp)
    tmp.replace(ck / "trainer.pt")
    for old in out_dir.glob("checkpoint-*"):  # keep only the newest
        if old != ck:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(checkpoint: Path, unet, opt) -> int:
    """Restore LoRA weights and optimizer state from a checkpoint folder; returns its step."""
    import torch
    from peft.utils import set_peft_model_state_dict

    saved = torch.load(checkpoint / "trainer.pt", map_location="cpu", weights_only=True)
    set_peft_model_state_dict(unet, saved["lora"])
    opt.load_state_dict(saved["optimizer"])
    return int(saved["step"])


@dataclass(frozen=True)
class ResumePlan:
    """What `train` does with a folder.

    action: "load" (finished with the same train_steps: only its weights are loaded), "resume"
    (continue from `checkpoint`, or from step 0 with the cached prior images when there is none;
    extending a finished run with more steps is a resume) or "fresh" (start over).
    done: the steps the folder already holds (0 for a fresh run)."""

    action: str
    checkpoint: Path | None = None
    done: int = 0


def plan_resume(out_dir: Path, fingerprint: dict, train_steps: int, restart: bool = False) -> ResumePlan:
    """The plan for training `train_steps` steps into `out_dir` (see docs/personalize.md, "Training").

    A folder is resumed only when its state.json has the same fingerprint (shots, class, settings,
    resolved precision). train_steps is not in the fingerprint: a finished run is extended by
    resuming from its last checkpoint (the same weights as a longer run from scratch); a run asked
    for fewer steps than the folder already holds starts over (only the newest checkpoint is kept,
    so the shorter run cannot be recovered)."""
    state = training_state(out_dir)
    if restart or state is None or state.get("fingerprint") != fingerprint:
        return ResumePlan("fresh")
    ckpts = checkpoints(out_dir)
    done = int(ckpts[-1].name.split("-")[1]) if ckpts else 0
    if state.get("complete") and state.get("step") == train_steps and (out_dir / LORA_WEIGHTS_NAME).is_file():
        return ResumePlan("load", done=train_steps)
    if max(done, int(state.get("step") or 0)) > train_steps:
        return ResumePlan("fresh")
    return ResumePlan("resume", ckpts[-1] if ckpts else None, done)


def prepare_folder(out_dir: Path, plan: ResumePlan) -> None:
    """Remove what the plan does not keep: everything of a fresh run's predecessor (checkpoints,
    prior images, weights); when resuming, the old final weights (they are not this run's result)."""
    if plan.action == "fresh":
        for p in list(out_dir.glob("checkpoint-*")) + [out_dir / "class_images", out_dir / LORA_WEIGHTS_NAME]:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    elif plan.action == "resume":
        (out_dir / LORA_WEIGHTS_NAME).unlink(missing_ok=True)
