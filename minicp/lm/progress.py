"""Progress bars of the long loops (train, perplexity, generate): tqdm on stderr, or nothing."""

import sys


class NoBar:
    """A progress bar that shows nothing (``progress=False``, or nothing to count)."""

    def update(self, n):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


def progress_bar(total, progress, desc, unit, initial=0, leave=False):
    """A tqdm bar over ``total`` ``unit``s on stderr (starting at ``initial``; kept on screen when done with
    ``leave``) when ``progress`` is true, else a ``NoBar``."""
    if not progress or not total:
        return NoBar()
    from tqdm.auto import tqdm  # a dependency; imported here so that importing minicp does not load it

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=leave)
