"""Errors raised for bad input, so callers can tell them from programming errors."""


class DataError(ValueError):
    """Malformed input data. The message names the file and the record (example id or line)."""

    def __init__(self, path, where, problem):
        self.path = str(path)
        self.where = where
        self.problem = problem
        location = f"{self.path}: {where}" if where else self.path
        super().__init__(f"{location}: {problem}")
