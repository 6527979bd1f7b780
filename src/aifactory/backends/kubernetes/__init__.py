"""Kubernetes: replicas as Pods and batch jobs as indexed Jobs, through the official client.

Imported only when a Kubernetes stack is configured. ``backend`` (replicas),
``pod`` (the Pod manifest and its status), ``watch`` (the Pod cache),
``capacity`` (whether a Pod fits now), ``jobs``/``job_set`` (batch jobs),
``identity`` (security contexts).
"""
