"""Errors a ComfyUI user reads in the UI: which node, which input, what to change."""


class NodeInputError(ValueError):
    def __init__(self, node, input_name, problem, fix):
        super().__init__(f"{node}: input '{input_name}': {problem} {fix}")
        self.node, self.input_name = node, input_name


def checked(node, input_name, check, value):
    """Run an edict_core parameter check and name the node and input in its error."""
    try:
        return check(value)
    except ValueError as error:
        raise NodeInputError(node, input_name, str(error), "Change the widget or the value in the prompt.") from None
