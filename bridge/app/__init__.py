"""The wiring: the one place that assembles the engine, the connectors and the handlers.

Everything else under ``bridge/`` is the engine, which imports neither ``connectors``
nor ``handlers`` nor a broker SDK; the modules here (the CLI, the runtime, dev mode
and the ``bridge test`` runner) are where the kinds meet the engine.
"""
