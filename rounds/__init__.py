"""The online round as plain code: sample → judge → (refine) → train → evaluate → gate (docs/architecture.md).

No Prefect here: `tasks/` wraps each step as a task and chooses where it runs; the steps get
what they need (a sampler, a judge, a training callable) as arguments.
"""
