"""fleetgate: from green main to a verified production fleet, fail-closed — as Dagger functions.

The same verbs as the `fleetgate` CLI (`dagger call deploy-production` = `fleetgate deploy-production`),
calling the same engine code in `pipelines/`, plus the container work around it: build, publish and
self-test. Settings arrive as function arguments (named like the CLI flags) or from `fleetgate.toml` in
the source directory; functions cannot see the caller's environment. Tokens are Dagger secrets
(`--gitea-token env://GITEA_TOKEN`).
"""

from dagger.mod import default_module

from ci.main import Fleetgate as Fleetgate

# A failing verb is one line (`VerbFailed`), not a traceback: the SDK's documented switch for its own
# traceback log. ci/run.py logs one itself for anything unexpected.
default_module().log_exceptions = False
