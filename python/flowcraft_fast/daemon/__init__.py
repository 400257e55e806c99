"""`flowcraft-fastd`, the worker daemon (SPEC section 7), one job per module.

`cli` (argparse main and exit codes), `config` (flags, env vars, TOML; precedence), `app`
(importing the user's FlowRuntime), `checks` (Redis reachable and not evicting), `lifecycle`
(one worker: start, signals, drain), `supervisor` (`--processes N` children), `notify` (the
systemd notify protocol), `metrics` (Prometheus endpoint), `logs` (text/json logging).
"""
