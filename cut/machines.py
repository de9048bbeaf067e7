"""Training on several machines: the part of an accelerate config file (`accelerate config` writes one per
machine) that says which machines train together and which one this is (`cut.accelerate_config`).

Each machine holds its own file at the same path, differing in `machine_rank`, as accelerate's own
default config does; the launch passes the file to `accelerate launch --config_file` where there are
GPUs, and the same machines to torchrun on a CPU (docs/scaling.md, "Several machines").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


class MachinesError(ValueError):
    """An accelerate config file that does not describe the machines; the message names the file and key."""


@dataclass(frozen=True)
class Machines:
    num_processes: int  # over every machine
    num_machines: int
    machine_rank: int  # this machine's
    main_process_ip: str
    main_process_port: int

    @property
    def processes_per_machine(self) -> int:
        return self.num_processes // self.num_machines


def read_machines(path: Path) -> Machines:
    """The machines an accelerate config file describes, checked as `accelerate launch` would need them."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise MachinesError(f"{path}: cannot read the accelerate config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise MachinesError(f"{path}: not YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise MachinesError(f"{path}: expected a mapping as `accelerate config` writes")

    def integer(key: str, default: int | None = None, least: int = 1) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise MachinesError(f"{path}: {key} must be an integer ≥ {least}, got {value!r}")
        return value

    machines = integer("num_machines", 1)
    processes = integer("num_processes", 1)
    rank = integer("machine_rank", 0, least=0)
    if rank >= machines:
        raise MachinesError(f"{path}: machine_rank {rank} is not below num_machines {machines}")
    if processes % machines:
        raise MachinesError(f"{path}: num_processes {processes} is not a multiple of num_machines {machines}")
    address = data.get("main_process_ip") or ("127.0.0.1" if machines == 1 else None)
    if not isinstance(address, str):
        raise MachinesError(f"{path}: main_process_ip must name the main machine when num_machines is {machines}")
    return Machines(processes, machines, rank, address, integer("main_process_port", 29500))
