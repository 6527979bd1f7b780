"""The OpenAI Batch API on idle capacity: files, batches, shards that resume, their output.

``BatchFiles`` keeps a tenant's files in its own bucket; ``BatchService``
creates and cancels batches; ``BatchSupervisor`` runs them as shards (a
local process, a Slurm job or a Kubernetes Job each, started by a ``ShardRunner``) whose
``worker`` starts the model's engine and checkpoints every answer.
"""

from aifactory.batches.files import BatchFiles, Download, bucket_of, file_view
from aifactory.batches.service import BatchService
from aifactory.batches.shards import KubernetesShards, LocalShards, ShardRunner, SlurmShards
from aifactory.batches.supervisor import BatchSupervisor
from aifactory.batches.warm import WarmShards

__all__ = [
    "BatchFiles",
    "BatchService",
    "BatchSupervisor",
    "Download",
    "KubernetesShards",
    "LocalShards",
    "ShardRunner",
    "SlurmShards",
    "WarmShards",
    "bucket_of",
    "file_view",
]
