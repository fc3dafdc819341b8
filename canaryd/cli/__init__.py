"""Command-line entry points: ``canaryd`` (run, sandbox, demo) and ``canaryctl`` / ``kubectl-canary``."""
