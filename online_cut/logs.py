"""The project's loggers, which flow runs forward to Prefect's terminal output and UI."""

import logging

PROJECT_LOGGERS = ("online_cut", "rounds", "tasks", "samplers", "judges", "cut", "storage")


def show_progress() -> None:
    """Prefect forwards the project's loggers (PREFECT_LOGGING_EXTRA_LOGGERS) but leaves their
    level at the root's WARNING; the steps report progress at INFO.

    Each flow calls it when it starts, not its module on import: a served deployment runs the flow
    in a spawned process that need not import the flow's module the way the serving one did."""
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
