"""Global batch size: derive gradient accumulation from a target global batch and the world size at launch.

    accelerate launch --num_processes 16 ... -m distill.cli train --config recipes/qwen2vl-2b/train_full.yaml
    # global_batch_size 128, per_device_train_batch_size 4, 16 processes -> gradient_accumulation_steps 2

TTE trains the student with a global batch of 128. A recipe that fixes `gradient_accumulation_steps` gets 128 only on
exactly the GPU count it was written for (2 nodes double it, 4 GPUs halve it), so recipes give `global_batch_size`
and the accumulation is derived when the processes start. When the numbers do not divide, training stops with a
message naming them instead of silently training with another batch.
"""

from __future__ import annotations

import os


def launch_world_size() -> int:
    """Processes in this launch: WORLD_SIZE as torchrun / accelerate / deepspeed set it for each process; 1 alone."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(value)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={value!r} is not an integer") from None
    if world < 1:
        raise ValueError(f"WORLD_SIZE={world} must be >= 1")
    return world


def accumulation_steps(global_batch: int, per_device: int, world_size: int, given: int = 1) -> int:
    """gradient_accumulation_steps giving exactly `global_batch` = per_device x steps x world_size.

    `given` is the recipe's own gradient_accumulation_steps: 1 (unset) or the derived value are accepted, anything
    else contradicts the target and fails. accumulation_steps(128, 4, 8) -> 4; (128, 4, 16) -> 2; (128, 4, 3) fails.
    """
    if global_batch < 1 or per_device < 1 or world_size < 1:
        raise ValueError(f"global_batch_size {global_batch}, per_device_train_batch_size {per_device} and world size "
                         f"{world_size} must all be >= 1")  # fmt: skip
    per_step = per_device * world_size
    if global_batch % per_step:
        fits = [d for d in range(1, per_device + 1) if global_batch % (d * world_size) == 0]
        hint = f"; per_device_train_batch_size {max(fits)} would" if fits else ""
        raise ValueError(
            f"global_batch_size {global_batch} is not a multiple of per_device_train_batch_size {per_device} x "
            f"{world_size} processes = {per_step}{hint}"
        )
    steps = global_batch // per_step
    if given not in (1, steps):
        raise ValueError(
            f"gradient_accumulation_steps {given} contradicts global_batch_size {global_batch} ({per_device} per "
            f"device x {world_size} processes needs {steps}); leave gradient_accumulation_steps unset"
        )
    return steps


def describe(per_device: int, steps: int, world_size: int) -> str:
    """'global batch 128 = 4 per device x 4 gradient accumulation x 8 processes' (logged and put in the summary)."""
    return (
        f"global batch {per_device * steps * world_size} = {per_device} per device x {steps} gradient accumulation x "
        f"{world_size} processes"
    )
