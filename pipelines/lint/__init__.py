"""`fleetgate lint-workflows`: a Gitea-aware workflow linter with the production CI/CD rules.

Kept light on purpose: this gate runs in every pipeline, so nothing here imports httpx, anyio or
rich. The YAML is composed into a node tree (never constructed), so every finding carries the
exact line and column of the node it is about.
"""
