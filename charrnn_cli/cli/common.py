"""What the commands share: the context settings and loading a checkpoint as one clear line."""

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def load_checkpoint(path, allow_nonfinite=False):
    from ..io.checkpoint import CheckpointError, load

    try:
        return load(path, allow_nonfinite=allow_nonfinite)
    except CheckpointError as e:
        raise click.ClickException(str(e)) from None
