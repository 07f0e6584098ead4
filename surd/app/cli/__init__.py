"""`surd`, the command line: one module per command group (the application layer).

| module | role |
|---|---|
| main | the root command, its options, errors → one line on stderr and an exit code |
| errors | the exit codes and how each kind of failure is classified |
| common | consoles (results on stdout, the rest on stderr), settings, result output |
| progress | progress on stderr: a live line on a terminal, log lines without one |
| paths | releases and runs named on the command line |
| stages | crawl, images, caption, clip-filter, embed, train, evaluate, generate, rebuild |
| data | status, sql, config (read-only: never create a data root) |
| release, review, ops | `surd release …`, `surd review …`; demo, deploy, replay |
"""

from surd.app.cli.main import app, main

__all__ = ["app", "main"]
