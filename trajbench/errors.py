"""The base of every error a command reports as one line: bad input, or a file or folder that cannot be used."""


class UserError(Exception):
    """Bad input or an unusable file: the command prints the message (the problem and the fix) as one line on
    stderr and exits 2. The errors of each area (runs, specs, datasets, formulations, ...) derive from it."""


_KINDS = ((bool, (bool,), "true or false"), (int, (int,), "an integer"), (float, (int, float), "a number"),
          (str, (str,), "a string"), (tuple, (list, tuple), "a list"), (dict, (dict,), "a table"),
          (type(None), (int, float, type(None)), "a number"))


def check_like(where: str, value, default, error: type[UserError] = UserError) -> None:
    """Raise ``error`` unless ``value`` has the kind of a config field's ``default``: an integer, a number, a
    string, a boolean, a table, or a list whose items are like the default's first item (a field whose default is
    None takes a number)."""
    for kind, accepted, text in _KINDS:
        if isinstance(default, kind):
            if not isinstance(value, accepted) or (kind is not bool and isinstance(value, bool)):
                raise error(f"{where} must be {text}, got {value!r}")
            if kind is tuple and default:
                for item in value:
                    check_like(f"{where} item", item, default[0], error)
            return
