"""Recipe: one vLLM server across several Slurm nodes, joined by Ray (a pure function).

The rendered text is the body of a batch script (after the ``#SBATCH`` lines)
for an allocation of ``nodes`` nodes with ``resources.gpus`` GPUs each::

    node 1 (batch host)                      nodes 2..N
    -------------------                      ----------
    srun -w HEAD ray start --head --block &
    wait until the head answers
                                             srun -w NODE ray start --address=HEAD:PORT --block &
    wait until Ray sees N nodes
    exec vllm serve MODEL --host {host} --port {port}
         --tensor-parallel-size GPUS_PER_NODE --pipeline-parallel-size NODES
         --distributed-executor-backend ray

The ``{host}`` and ``{port}`` placeholders stay in the text, as in
``engines/vllm.py``; whoever runs the script fills them in. Every value from
the spec is passed through ``shlex.quote``. vLLM and Ray need GPUs, so only
the rendering is tested here.
"""

from __future__ import annotations

import shlex

from aifactory.engines import vllm
from aifactory.errors import EngineError
from aifactory.specs import Service

_DEFAULTS = {
    "tensor_parallel_size": "--tensor-parallel-size",
    "pipeline_parallel_size": "--pipeline-parallel-size",
    "distributed_executor_backend": "--distributed-executor-backend",
}


def render(
    service: Service,
    nodes: int,
    *,
    ray_port: int = 6379,
    join_timeout_s: int = 600,
    executable: str = "vllm",
    ray: str = "ray",
    python: str = "python3",
) -> str:
    """The batch-script body that serves ``service`` with vLLM on ``nodes`` nodes.

    Args:
        service: A ``vllm`` service; ``resources.gpus`` is the GPUs per node.
        nodes: How many nodes the allocation has (at least 2).
        ray_port: The port of the Ray head (GCS).
        join_timeout_s: How long to wait for every node to join Ray.
        executable: The ``vllm`` command.
        ray: The ``ray`` command.
        python: A Python with ``ray`` installed (to count the joined nodes).

    Returns:
        Bash text with ``{host}`` and ``{port}`` placeholders in its last line.

    Raises:
        EngineError: when the service is not a GPU vLLM service or nodes < 2.
    """
    if service.engine.type != "vllm":
        raise EngineError(
            f"service {service.name!r} uses engine {service.engine.type!r}, not vllm.",
            fix="set `engine.type: vllm` for a multi-node vLLM recipe",
        )
    if nodes < 2:
        raise EngineError(
            f"a multi-node recipe needs at least 2 nodes, not {nodes}.",
            fix="use the single-node vllm recipe for one node",
        )
    gpus = service.resources.gpus
    if gpus < 1:
        raise EngineError(
            f"service {service.name!r} asks for no GPUs; vLLM across nodes needs them.",
            fix="set `resources.gpus` to the GPUs per node (e.g. 4)",
        )
    if not 0 < ray_port < 65536:
        raise EngineError(f"ray_port {ray_port} is not a TCP port.")
    launch = vllm.render(service, executable)
    argv = list(launch.argv)
    if "--tensor-parallel-size" not in argv:
        argv += ["--tensor-parallel-size", str(gpus)]
    wanted = {"pipeline_parallel_size": str(nodes), "distributed_executor_backend": "ray"}
    for name, value in wanted.items():
        if _DEFAULTS[name] not in argv:
            argv += [_DEFAULTS[name], value]
    q = shlex.quote
    per_srun = "srun --nodes=1 --ntasks=1 --overlap -w"
    count_nodes = (
        'import ray; ray.init(logging_level="ERROR"); print(sum(n["Alive"] for n in ray.nodes()))'
    )
    lines = [
        f"# vLLM on {nodes} nodes with Ray: a head on the first node, a worker on each other.",
        *(f"export {name}={q(value)}" for name, value in sorted(launch.env.items())),
        'mapfile -t aif_nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        f'if [ "${{#aif_nodes[@]}}" -ne {nodes} ]; then',
        f'  echo "this recipe needs {nodes} nodes; the allocation has ${{#aif_nodes[@]}}" >&2',
        "  exit 1",
        "fi",
        'aif_head="${aif_nodes[0]}"',
        f"aif_head_ip=$({per_srun} \"$aif_head\" hostname --ip-address | awk '{{print $1}}')",
        f'export RAY_ADDRESS="$aif_head_ip:{ray_port}"',
        f"aif_deadline=$((SECONDS + {join_timeout_s}))",
        f'{per_srun} "$aif_head" {q(ray)} start --head --block '
        f'--node-ip-address="$aif_head_ip" --port={ray_port} --num-gpus={gpus} &',
        f'until {q(ray)} status --address="$RAY_ADDRESS" >/dev/null 2>&1; do',
        '  if [ "$SECONDS" -ge "$aif_deadline" ]; then',
        f'    echo "the Ray head did not start within {join_timeout_s}s" >&2',
        "    exit 1",
        "  fi",
        "  sleep 2",
        "done",
        'for aif_node in "${aif_nodes[@]:1}"; do',
        f'  {per_srun} "$aif_node" {q(ray)} start --block '
        f'--address="$RAY_ADDRESS" --num-gpus={gpus} &',
        "done",
        f'until [ "$({q(python)} -c {q(count_nodes)} 2>/dev/null)" = "{nodes}" ]; do',
        '  if [ "$SECONDS" -ge "$aif_deadline" ]; then',
        f'    echo "Ray did not see {nodes} nodes within {join_timeout_s}s" >&2',
        "    exit 1",
        "  fi",
        "  sleep 5",
        "done",
        "exec " + shlex.join(argv),
        "",
    ]
    return "\n".join(lines)
