"""Progress bars of the long loops (train, perplexity, generate): tqdm on stderr, or nothing."""

import sys


class NoBar:
    """A progress bar that shows nothing (``progress=False``, or nothing to count)."""

    def update(self, n):
        pass

    def close(self):
        pass


def progress_bar(total, progress, desc, unit):
    """A tqdm bar over ``total`` ``unit``s on stderr when ``progress`` is true, else a ``NoBar``."""
    if not progress or not total:
        return NoBar()
    from tqdm.auto import tqdm  # a dependency; imported here so that importing minicp does not load it

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
